//! `airlock`: thin command-line front of the installer library. It parses flags,
//! draws progress on a TTY, renders reports as text or JSON, and maps errors to the
//! exit codes documented in docs/exit-codes.md.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use airlock_format::error::{Error, Result};
use airlock_format::parts::BundleFiles;
use airlock_format::report::{Event, Reporter, Silent};
use airlock_installer::images::{write_image_archive, Compression};
use airlock_installer::verify::{Status, VerifyOptions, VerifyReport};
use airlock_installer::{inspect, staging, trust, verify};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "airlock", version, about = "Verify Airlock bundles and install the platform they carry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a bundle completely: signature, every entry, the checksum sidecar.
    Verify {
        /// The bundle file (or any of its .partNNN files).
        bundle: PathBuf,
        /// Vendor public key(s) to trust (default: the site keys in /etc/airlock/keys).
        #[arg(long)]
        pubkey: Vec<PathBuf>,
        /// Also hash every bundle file against the signed .sha256 list.
        #[arg(long)]
        check_parts: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show what a bundle holds (works without a key: then it says "unverified").
    Inspect {
        bundle: PathBuf,
        #[arg(long)]
        pubkey: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Install the platform from a bundle: verify and stage it, plan, then apply.
    Install {
        bundle: PathBuf,
        /// Vendor public key(s) to trust (default: the site keys in <root>/etc/airlock/keys).
        #[arg(long)]
        pubkey: Vec<PathBuf>,
        /// Answers file for an unattended install (docs/answers.md).
        #[arg(long)]
        answers: Option<PathBuf>,
        /// Install into this target root instead of the running system: files are laid
        /// out and units enabled by symlink; nothing is started.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Accept the plan without asking.
        #[arg(long)]
        yes: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Exit 7 when anything is pending (changes nothing).
        #[arg(long)]
        check: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The site's LDAP/Active Directory settings (the `ldap:` answers).
    Ldap {
        #[command(subcommand)]
        command: LdapCommand,
    },
    /// Verify while extracting into a new staging directory (removed on any failure).
    Extract {
        bundle: PathBuf,
        #[arg(long)]
        pubkey: Vec<PathBuf>,
        /// Staging directory to create.
        #[arg(short = 'd', long)]
        dir: PathBuf,
        /// Also write the image archive K3s/RKE2 import (.tar, or .tar.zst to compress).
        #[arg(long)]
        image_archive: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum LdapCommand {
    /// Test the answers' `ldap:` settings against the live directory: DNS, TCP, TLS,
    /// bind, and the user and group searches Keycloak will run. Exit 8 when it fails.
    Test {
        /// Answers file with an `ldap:` section (docs/answers.md).
        #[arg(long)]
        answers: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.kind.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Verify { bundle, pubkey, check_parts, output } => {
            let keys = trust::trusted_keys(&pubkey, std::path::Path::new("/"))?;
            let files = BundleFiles::locate(&bundle)?;
            let progress = Progress::new(output == Output::Text);
            let report = verify::verify(&files, &keys, &VerifyOptions { check_parts }, progress.reporter());
            progress.finish();
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report).expect("json")),
                Output::Text => print_verify(&report),
            }
            Ok(report.exit_code as u8)
        }
        Command::Inspect { bundle, pubkey, output } => {
            let files = BundleFiles::locate(&bundle)?;
            let keys =
                if pubkey.is_empty() { None } else { Some(trust::trusted_keys(&pubkey, std::path::Path::new("/"))?) };
            let r = inspect::inspect(&files, keys.as_deref())?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r).expect("json")),
                Output::Text => print_inspect(&r),
            }
            Ok(0)
        }
        Command::Install { bundle, pubkey, answers, root, yes, dry_run, check, output } => {
            install(&bundle, &pubkey, answers.as_deref(), &root, yes, dry_run, check, output)
        }
        Command::Ldap { command: LdapCommand::Test { answers, output } } => ldap_test(&answers, output),
        Command::Extract { bundle, pubkey, dir, image_archive } => {
            let keys = trust::trusted_keys(&pubkey, std::path::Path::new("/"))?;
            let files = BundleFiles::locate(&bundle)?;
            let progress = Progress::new(true);
            let staged = staging::extract(&files, &keys, &dir, progress.reporter());
            progress.finish();
            let staged = staged?;
            println!(
                "verified {} {} (signed by {}) into {}",
                staged.manifest.name,
                staged.manifest.version,
                staged.signer.key_id_hex(),
                staged.dir.display()
            );
            if let Some(out) = image_archive {
                if staged.manifest.images.is_empty() {
                    return Err(Error::input(bundle.display().to_string(), "the bundle carries no images"));
                }
                let zst = out.to_string_lossy().ends_with(".zst");
                let c = if zst { Compression::Zstd { level: 3 } } else { Compression::None };
                write_image_archive(&staged.path("oci"), &out, c, 0)?;
                println!("image archive {}", out.display());
            }
            Ok(0)
        }
    }
}

/// Exit code of `install --check` when something is pending (docs/exit-codes.md).
const EXIT_PENDING: u8 = 7;

/// Exit code of `airlock ldap test` when the directory check fails (docs/exit-codes.md):
/// its own code, not Input's 1, so a script can tell a malformed answers file from a
/// directory that is down, untrusted or refuses the account.
const EXIT_LDAP: u8 = 8;

fn ldap_test(answers: &std::path::Path, output: Output) -> Result<u8> {
    let a = airlock_installer::answers::Answers::load(answers)?;
    let Some(settings) = a.ldap else {
        return Err(Error::input(answers.display().to_string(), "the answers have no `ldap` section").with_hint(
            "add ldap.url, ldap.bind_dn, ldap.bind_password, ldap.users_dn and ldap.preset (docs/answers.md)",
        ));
    };
    let result = airlock_installer::ldap::probe(&settings);
    match output {
        Output::Json => {
            let v = match &result {
                Ok(r) => serde_json::json!({"ok": true, "exit_code": 0, "report": r}),
                Err(e) => serde_json::json!({"ok": false, "exit_code": EXIT_LDAP, "error": e}),
            };
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }
        Output::Text => match &result {
            Ok(r) => println!("{}\nLDAP settings work", r.summary()),
            Err(e) => eprintln!("error: LDAP check failed: {e}"),
        },
    }
    Ok(if result.is_ok() { 0 } else { EXIT_LDAP })
}

#[allow(clippy::too_many_arguments)]
fn install(
    bundle: &std::path::Path,
    pubkey: &[PathBuf],
    answers: Option<&std::path::Path>,
    root: &std::path::Path,
    yes: bool,
    dry_run: bool,
    check: bool,
    output: Output,
) -> Result<u8> {
    use airlock_installer::engine::{apply, ApplyOptions};
    use airlock_installer::host::RootedHost;
    use airlock_installer::install::{plan, stage, staged_profiles, STATE_DIR};

    let answers_path_arg = answers;
    let live = root == std::path::Path::new("/");
    if live {
        // Starting K3s/RKE2 and waiting for the node and charts is not built yet; laying
        // files onto the running system without that would leave a half-started host.
        return Err(Error::input("--root", "installing onto the running system is not available yet")
            .with_hint("install into a target root with --root DIR (golden images, tests)"));
    }
    let answers = match answers {
        Some(path) => Some(airlock_installer::answers::Answers::load(path)?),
        None if std::io::stdin().is_terminal() => None,
        None => {
            return Err(Error::input("--answers", "no answers file given and no terminal to ask on")
                .with_hint("pass --answers FILE (docs/answers.md; examples/demo/answers.yaml is an example)"))
        }
    };
    let keys = trust::trusted_keys(pubkey, root)?;
    let host = RootedHost::new(root.to_path_buf(), live)?;
    let progress = Progress::new(output == Output::Text);
    let staged = stage(bundle, &keys, &host, progress.reporter());
    progress.finish();
    let staged = staged?;
    let answers = match answers {
        Some(a) => a,
        None => {
            let facts = airlock_installer::answers::Facts {
                host: airlock_installer::answers::HostFacts { hostname: local_hostname(), primary_ip: None },
                profiles: staged_profiles(&staged)?,
            };
            println!("Answer the questions for this node (Enter takes the value in brackets).");
            // The LDAP answers are tested live as soon as they are given (asked again on failure).
            airlock_installer::answers::ask_checked(
                airlock_installer::answers::questions(),
                &facts,
                &mut TerminalPrompter,
                &[airlock_installer::ldap::live_check()],
            )?
            .0
        }
    };
    let prepared = plan(bundle, staged, &answers, &host)?;
    let report = prepared.plan.check(&host)?;
    if dry_run || check {
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&report).expect("json")),
            Output::Text => {
                for s in &report.steps {
                    println!("  {:9} {}", state_word(&s.state), s.description);
                }
                println!(
                    "{} steps: {} pending, {} blocked, {} done",
                    report.steps.len(),
                    report.pending,
                    report.blocked,
                    report.satisfied()
                );
            }
        }
        return Ok(if check && (report.pending > 0 || report.blocked > 0) { EXIT_PENDING } else { 0 });
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::input("install", "the plan needs confirming and there is no terminal to ask on")
                .with_hint("review it with --dry-run, then pass --yes"));
        }
        println!("{} of {} steps to apply to {}", report.pending, report.steps.len(), root.display());
        let go = dialoguer::Confirm::new().with_prompt("Apply the plan?").default(false).interact().unwrap_or(false);
        if !go {
            return Ok(1);
        }
    }
    let resume = match answers_path_arg {
        Some(a) => {
            format!("airlock install {} --answers {} --root {} --yes", bundle.display(), a.display(), root.display())
        }
        None => format!("airlock install {} --root {}", bundle.display(), root.display()),
    };
    let opts = ApplyOptions { state_dir: PathBuf::from(STATE_DIR), resume_command: resume };
    let done = apply(&prepared.plan, &host, &opts, &mut |_| {})?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&done).expect("json")),
        Output::Text => println!(
            "installed {} {} into {}: {} steps applied, {} already done; journal {}",
            prepared.staged.manifest.name,
            prepared.staged.manifest.version,
            root.display(),
            done.applied,
            done.satisfied,
            done.journal.display()
        ),
    }
    Ok(0)
}

/// The host name to suggest for `node.name` (read, not changed).
fn local_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_lowercase()).filter(|h| !h.is_empty())
}

/// The wizard's front end: dialoguer prompts on the terminal. Validation is the
/// library's (the same as for answers files); this only draws and reads.
struct TerminalPrompter;

impl airlock_installer::answers::Prompter for TerminalPrompter {
    fn answer(&mut self, p: &airlock_installer::answers::Prompt<'_>) -> Result<String> {
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

    fn rejected(&mut self, problem: &airlock_installer::answers::Problem) {
        eprintln!("  not taken: {problem}");
    }

    fn note(&mut self, text: &str) {
        for line in text.lines() {
            println!("  {line}");
        }
    }
}

fn state_word(s: &airlock_installer::engine::StepState) -> &'static str {
    use airlock_installer::engine::StepState;
    match s {
        StepState::Satisfied => "done",
        StepState::Pending { .. } => "pending",
        StepState::Blocked { .. } => "BLOCKED",
    }
}

fn print_verify(r: &VerifyReport) {
    let title = match (&r.name, &r.version) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        _ => r.bundle.clone(),
    };
    if let Some(s) = &r.signer {
        println!("signature: good, key {s}");
    }
    for a in &r.artifacts {
        let mark = match a.status {
            Status::Ok => "ok         ",
            Status::Corrupt => "CORRUPT    ",
            Status::Unsafe => "UNSAFE     ",
            Status::NotChecked => "not checked",
        };
        println!("  {mark} {} {}", a.kind, a.name);
        for p in &a.problems {
            println!("              {p}");
        }
    }
    println!("checksum list: {}", r.checksums);
    for p in &r.parts {
        println!("  {:11} {} ({} bytes)", p.status, p.path, p.size);
    }
    for e in &r.errors {
        eprintln!("error: {}: {}", e.subject, e.cause);
        if let Some(h) = &e.hint {
            eprintln!("  hint: {h}");
        }
    }
    if r.ok {
        println!("{title}: verified, every artifact matches the signed manifest");
    } else {
        println!("{title}: FAILED (exit {})", r.exit_code);
    }
}

fn print_inspect(r: &inspect::InspectReport) {
    println!("bundle      {} {}", r.name, r.version);
    println!("created     {}", r.created);
    println!("signed by   key {} ({})", r.signer_key_id, r.signature);
    if r.signature != "verified" {
        println!("            content not verified: run `airlock verify --pubkey VENDOR.pub` for that");
    }
    if let Some(d) = &r.distribution {
        println!("distribution {} {} ({})", d.kind, d.version, d.arch);
        for a in &d.artifacts {
            println!("  {:40} {:>12}  sha256:{}", a.name, a.size, a.sha256);
        }
    }
    println!("images ({})", r.images.len());
    for i in &r.images {
        println!("  {} [{}]", i.reference, i.component);
        println!("      {}  {}  {} bytes", i.digest, i.platforms.join(","), i.size);
    }
    println!("charts ({})", r.charts.len());
    for c in &r.charts {
        println!("  {} {} [{}]  {}  {} bytes", c.name, c.version, c.component, c.digest, c.size);
    }
    println!("files ({})", r.files.len());
    for f in &r.files {
        println!("  {:40} {:>12}  sha256:{}", f.name, f.size, f.sha256);
    }
    if !r.profiles.is_empty() {
        println!("profiles    {}", r.profiles.join(", "));
    }
    if let Some(v) = &r.installer_version {
        println!("installer   airlock {v}");
    }
    println!(
        "size        {} bytes in {} entries, {} bytes compressed in {} file(s)",
        r.total_size, r.entries, r.compressed_size, r.parts
    );
}

/// Progress on a TTY (stderr); nothing otherwise.
struct Progress {
    bar: Option<Mutex<Option<indicatif::ProgressBar>>>,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Self { bar: (enabled && std::io::stderr().is_terminal()).then(|| Mutex::new(None)) }
    }
    fn reporter(&self) -> &dyn Reporter {
        if self.bar.is_some() {
            self
        } else {
            &Silent
        }
    }
    fn finish(&self) {
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
            Event::Entry { .. } => {}
        }
    }
}
