//! `airlock`: thin command-line front of the installer library. It parses flags,
//! draws progress on a TTY, renders reports as text or JSON, and maps errors to the
//! exit codes documented in docs/exit-codes.md.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use airlock_format::error::{Error, Result};
use airlock_format::parts::BundleFiles;
use airlock_format::report::{Event, Reporter, Silent};
use airlock_installer::bundle::images::{write_image_archive, Compression};
use airlock_installer::bundle::verify::{Status, VerifyOptions, VerifyReport};
use airlock_installer::bundle::{inspect, staging, trust, verify};
use airlock_installer::ops::uninstall::UninstallOptions;
use clap::{Args, Parser, Subcommand, ValueEnum};

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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PreflightMode {
    Install,
    Join,
    Upgrade,
}

/// Trust, answers and target: what `install`, `join` and `upgrade` share.
#[derive(Args)]
struct SiteFlags {
    /// Vendor public key(s) to trust (default: the site keys in <root>/etc/airlock/keys).
    #[arg(long)]
    pubkey: Vec<PathBuf>,
    /// The site's answers file (docs/answers.md); without it `install` and `join` ask,
    /// and `upgrade` uses the copy the install kept in /var/lib/airlock.
    #[arg(long)]
    answers: Option<PathBuf>,
    /// Work on this target root instead of the running system: files are laid out and
    /// units enabled by symlink; nothing is started.
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

/// What `install` and `join` share.
#[derive(Args)]
struct InstallFlags {
    #[command(flatten)]
    site: SiteFlags,
    /// Accept the plan without asking.
    #[arg(long)]
    yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Exit 7 when anything is pending (changes nothing).
    #[arg(long)]
    check: bool,
    /// Accept a failing preflight check, named by id (repeatable); journaled.
    #[arg(long = "override", value_name = "CHECK")]
    overrides: Vec<String>,
    /// Live mode: seconds to wait for the node and every chart before giving up.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

impl InstallFlags {
    fn args(&self, join: Option<JoinFlags>) -> InstallArgs {
        InstallArgs {
            yes: self.yes,
            dry_run: self.dry_run,
            check: self.check,
            overrides: self.overrides.clone(),
            timeout: Duration::from_secs(self.timeout),
            output: self.output,
            join,
        }
    }
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
        /// Print the bundle's CycloneDX SBOM (JSON) instead of the summary.
        #[arg(long)]
        sbom: bool,
    },
    /// Install the platform from a bundle: verify and stage it, plan, then apply.
    Install {
        bundle: PathBuf,
        #[command(flatten)]
        flags: InstallFlags,
    },
    /// Join this node to a cluster another node started: a further HA server or an
    /// agent, from the same bundle and the join token file the first server wrote.
    /// Everything else is as `install` (the answers' `join` section, or these flags).
    Join {
        bundle: PathBuf,
        /// The first server's address (overrides `join.server`).
        #[arg(long)]
        server: Option<String>,
        /// The join token file copied from the first server (overrides `join.token_file`;
        /// default /etc/airlock/join-token).
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        flags: InstallFlags,
    },
    /// Upgrade the installed release from a newer bundle: verify, policy, preflight,
    /// the diff, a backup first, then images, distribution, charts and a health gate;
    /// on failure the whole previous release is put back (docs/day2.md, upgrade).
    Upgrade {
        bundle: PathBuf,
        #[command(flatten)]
        flags: UpgradeFlags,
    },
    /// Remove what `airlock install` laid down (its recorded inventory) and nothing
    /// else; files of ours changed since are kept unless --force.
    Uninstall {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Also remove what the distribution created while running (its datastore,
        /// kubeconfig, kubelet state): the cluster's data is gone for good.
        #[arg(long)]
        purge: bool,
        /// Also remove files of ours that were changed since the install.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        yes: bool,
        /// Print what would be removed and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Check whether this host can take the platform: pass / warn / fail with a fix for
    /// each (exit 8 when a check fails). Verifies the bundle for its profile's limits.
    Preflight {
        bundle: PathBuf,
        #[arg(long)]
        pubkey: Vec<PathBuf>,
        /// The site's answers (profile, role, data directory, join, overrides).
        #[arg(long, conflicts_with = "profile")]
        answers: Option<PathBuf>,
        /// Without answers: the bundle profile to check against (as a first server).
        #[arg(long)]
        profile: Option<String>,
        /// What the run is for; default: install, or join when the answers join.
        #[arg(long, value_enum)]
        mode: Option<PreflightMode>,
        /// Check a target root instead of the running system.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Accept a failing check by id (repeatable).
        #[arg(long = "override", value_name = "CHECK")]
        overrides: Vec<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The site PKI on a target: certificate status, and renewal of self-signed leaves.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// The site's LDAP/Active Directory settings (the `ldap:` answers).
    Ldap {
        #[command(subcommand)]
        command: LdapCommand,
    },
    /// What is installed here and whether it is as installed: release, components,
    /// certificate expiry, last run, drift; on the running system also node and chart
    /// health. Exit 11 when anything needs attention (interrupted, drift, expired...).
    Status {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Collect a support bundle (journal, state, preflight, configs, logs, cluster
    /// state) with every secret redacted; works on a broken site with what it reaches.
    SupportBundle {
        /// The archive to write (0600): .tar.gz, or .tar.zst for zstd.
        #[arg(short = 'o', long = "output-file")]
        output_file: PathBuf,
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
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
enum PkiCommand {
    /// Every certificate in /etc/airlock/pki: subject, SANs, not-after, days left,
    /// SHA-256. Exits 10 when one has expired.
    Status {
        /// The target root the platform was installed into.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Warn about certificates that expire within this many days.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        within: i64,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Re-issue the leaf certificates that expire within DAYS with the site CA (new keys,
    /// same names). Self-signed PKI only: customer certificates come from the customer.
    Renew {
        /// The target root the platform was installed into.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Re-issue leaves with this many days left or fewer.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        within: i64,
        /// Say what would be renewed and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum LdapCommand {
    /// Test the answers' `ldap:` settings against the live directory: DNS, TCP, TLS,
    /// bind, and the user and group searches Keycloak will run. Exit 9 when it fails.
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
        Command::Inspect { bundle, pubkey, output, sbom } => {
            let files = BundleFiles::locate(&bundle)?;
            let keys =
                if pubkey.is_empty() { None } else { Some(trust::trusted_keys(&pubkey, std::path::Path::new("/"))?) };
            if sbom {
                let bytes = inspect::sbom(&files, keys.as_deref())?;
                std::io::Write::write_all(&mut std::io::stdout(), &bytes)
                    .map_err(|e| airlock_format::error::Error::io("stdout", e))?;
                return Ok(0);
            }
            let r = inspect::inspect(&files, keys.as_deref())?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r).expect("json")),
                Output::Text => print_inspect(&r),
            }
            Ok(0)
        }
        Command::Install { bundle, flags } => {
            install(&bundle, &flags.site.pubkey, flags.site.answers.as_deref(), &flags.site.root, &flags.args(None))
        }
        Command::Join { bundle, server, token_file, flags } => {
            let join = Some(JoinFlags { server, token_file });
            install(&bundle, &flags.site.pubkey, flags.site.answers.as_deref(), &flags.site.root, &flags.args(join))
        }
        Command::Upgrade { bundle, flags } => upgrade(&bundle, flags),
        Command::Uninstall { root, purge, force, yes, dry_run, output } => {
            uninstall(&root, UninstallOptions { force, purge }, yes, dry_run, output)
        }
        Command::Preflight { bundle, pubkey, answers, profile, mode, root, overrides, output } => {
            preflight(&bundle, &pubkey, answers.as_deref(), profile.as_deref(), mode, &root, &overrides, output)
        }
        Command::Pki { command } => pki(command),
        Command::Ldap { command: LdapCommand::Test { answers, output } } => ldap_test(&answers, output),
        Command::Status { root, output } => status(&root, output),
        Command::SupportBundle { output_file, root, output } => support_bundle(&root, &output_file, output),
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
/// Exit code when a preflight check fails and is not overridden (docs/exit-codes.md).
const EXIT_PREFLIGHT: u8 = 8;
/// Exit code of `airlock status` when the node needs attention (docs/exit-codes.md).
const EXIT_UNHEALTHY: u8 = 11;

struct InstallArgs {
    yes: bool,
    dry_run: bool,
    check: bool,
    overrides: Vec<String>,
    timeout: Duration,
    output: Output,
    /// `airlock join`: the node must join, with these overrides of the answers.
    join: Option<JoinFlags>,
}

struct JoinFlags {
    server: Option<String>,
    token_file: Option<PathBuf>,
}

/// Exit code of `airlock ldap test` when the directory check fails (docs/exit-codes.md):
/// its own code, not Input's 1, so a script can tell a malformed answers file from a
/// directory that is down, untrusted or refuses the account.
const EXIT_LDAP: u8 = 9;

fn ldap_test(answers: &std::path::Path, output: Output) -> Result<u8> {
    let a = airlock_installer::site::answers::Answers::load(answers)?;
    let Some(settings) = a.ldap else {
        return Err(Error::input(answers.display().to_string(), "the answers have no `ldap` section").with_hint(
            "add ldap.url, ldap.bind_dn, ldap.bind_password, ldap.users_dn and ldap.preset (docs/answers.md)",
        ));
    };
    let result = airlock_installer::site::ldap::probe(&settings);
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

/// What the bundle carries that decides which answers are required (`ldap` with
/// Keycloak), from its manifest alone: the signature is checked, which is cheap, so a
/// file lacking an answer is refused before the whole bundle is verified into staging.
fn signed_bundle_facts(
    bundle: &std::path::Path,
    keys: &[airlock_format::minisign::PublicKey],
    root: &std::path::Path,
) -> Result<airlock_installer::site::answers::BundleFacts> {
    let files = airlock_format::parts::BundleFiles::locate(bundle)?;
    let (manifest, _, _) = airlock_format::read::read_manifest(&files, Some(keys))
        .map_err(|e| trust::explain_untrusted_signer(e, root))?;
    Ok(airlock_installer::site::answers::BundleFacts::from_manifest(&manifest))
}

fn install(
    bundle: &std::path::Path,
    pubkey: &[PathBuf],
    answers: Option<&std::path::Path>,
    root: &std::path::Path,
    args: &InstallArgs,
) -> Result<u8> {
    use airlock_installer::engine::{apply, ApplyOptions};
    use airlock_installer::host::{Host, RootedHost};
    use airlock_installer::live::{bring_up, post_install_checks, SystemClock, WaitOptions};
    use airlock_installer::ops::install::{plan, stage, staged_profiles};
    use airlock_installer::site::preflight::site::{self, SiteInput};

    let output = args.output;
    let answers_path_arg = answers;
    let live = root == std::path::Path::new("/");
    if answers.is_none() && !std::io::stdin().is_terminal() {
        return Err(Error::input("--answers", "no answers file given and no terminal to ask on")
            .with_hint("pass --answers FILE (docs/answers.md; examples/demo/answers.yaml is an example)"));
    }
    let keys = trust::trusted_keys(pubkey, root)?;
    let bundle_facts = signed_bundle_facts(bundle, &keys, root)?;
    let answers = match (answers, &args.join) {
        (Some(path), Some(j)) => Some(airlock_installer::site::answers::Answers::load_for_join(
            path,
            j.server.as_deref(),
            j.token_file.as_deref(),
            Some(&bundle_facts),
        )?),
        (Some(path), None) => Some(airlock_installer::site::answers::Answers::load_for_bundle(path, &bundle_facts)?),
        (None, _) => None,
    };
    let host = RootedHost::new(root.to_path_buf(), live)?;
    let progress = Progress::new(output == Output::Text);
    let staged = stage(bundle, &keys, &host, progress.reporter());
    progress.finish();
    let staged = staged.map_err(|e| trust::explain_untrusted_signer(e, root))?;
    // What the wizard was told, kept on the site (secrets apart) for later upgrades.
    let mut wizard_answers = None;
    let answers = match answers {
        Some(a) => a,
        None => {
            let profiles = staged_profiles(&staged)?;
            let facts = airlock_installer::site::answers::Facts {
                host: airlock_installer::site::answers::HostFacts { hostname: local_hostname(), primary_ip: None },
                bundle: Some(bundle_facts.with_profiles(&profiles)),
                profiles,
            };
            println!("Answer the questions for this node (Enter takes the value in brackets).");
            // The LDAP answers are tested live and the customer's PKI files checked as soon
            // as they are given (asked again on failure).
            let (answers, answered) = airlock_installer::site::answers::ask_checked(
                airlock_installer::site::answers::questions(),
                &facts,
                &mut TerminalPrompter,
                &[airlock_installer::site::ldap::live_check(), airlock_installer::site::pki::wizard::live_check()],
            )?;
            wizard_answers = Some(answered);
            answers
        }
    };
    if args.join.is_some() && answers.join.is_none() {
        return Err(Error::input(
            format!("{}: join", answers.origin),
            "these answers are for the node that starts the cluster",
        )
        .with_hint(
            "install that node with `airlock install`; `airlock join` is for the other servers and the agents",
        ));
    }
    let prepared = plan(bundle, staged, &answers, &host)?;
    let image_bytes = site::image_bytes(&prepared.staged.manifest);
    let input = SiteInput::from_answers(&prepared.profile, &answers, image_bytes, &args.overrides);
    let pre = site::check(root, &input)?;
    for w in prepared.pki.iter().flat_map(|p| p.warnings()) {
        eprintln!("warning: {w}");
    }
    let report = prepared.plan.check(&host)?;
    if output == Output::Text {
        print_preflight(&pre);
    }
    if args.dry_run || args.check {
        match output {
            Output::Json => print_json(&serde_json::json!({ "preflight": pre, "plan": report })),
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
        if !pre.may_proceed() {
            return Ok(EXIT_PREFLIGHT);
        }
        return Ok(if args.check && (report.pending > 0 || report.blocked > 0) { EXIT_PENDING } else { 0 });
    }
    if !pre.may_proceed() {
        if output == Output::Json {
            print_json(&serde_json::json!({ "preflight": pre }));
        }
        let failed: Vec<&str> = pre.failed().map(|c| c.id.as_str()).collect();
        eprintln!(
            "error: preflight: {} failed; nothing was changed\nhint: fix what each hint says and run again, or accept a \
             check by name with --override {} (journaled)",
            failed.join(", "),
            failed.first().copied().unwrap_or("CHECK")
        );
        return Ok(EXIT_PREFLIGHT);
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::input("install", "the plan needs confirming and there is no terminal to ask on")
                .with_hint("review it with --dry-run, then pass --yes"));
        }
        let target =
            if live { "this system (live: the services start)".to_string() } else { root.display().to_string() };
        println!("{} of {} steps to apply to {target}", report.pending, report.steps.len());
        let go = dialoguer::Confirm::new().with_prompt("Apply the plan?").default(false).interact().unwrap_or(false);
        if !go {
            return Ok(1);
        }
    }
    let verb = if args.join.is_some() { "join" } else { "install" };
    let mut resume = format!("airlock {verb} {}", bundle.display());
    // The keys given are part of the command: without them a site with no key
    // directory could not verify the bundle again.
    for k in pubkey {
        resume.push_str(&format!(" --pubkey {}", k.display()));
    }
    if let Some(a) = answers_path_arg {
        resume.push_str(&format!(" --answers {}", a.display()));
    }
    if !live {
        resume.push_str(&format!(" --root {}", root.display()));
    }
    for o in &args.overrides {
        resume.push_str(&format!(" --override {o}"));
    }
    if let (Some(flags), Some(j)) = (&args.join, &answers.join) {
        if flags.server.is_some() {
            resume.push_str(&format!(" --server {}", j.server));
        }
        if flags.token_file.is_some() {
            resume.push_str(&format!(" --token-file {}", j.token_file.display()));
        }
    }
    if answers_path_arg.is_some() {
        resume.push_str(" --yes");
    }
    let opts = ApplyOptions {
        state_dir: PathBuf::from(airlock_installer::state::STATE_DIR),
        resume_command: resume,
        overrides: pre.applied_overrides().cloned().collect(),
    };
    let done = apply(&prepared.plan, &host, &opts, &mut |_| {})?;
    // The release is kept whole (bundle, snapshot, answers without secrets) for
    // `airlock upgrade` and its rollback.
    use airlock_installer::site::answers::kept::InstallAnswers;
    let answers_text = match answers_path_arg {
        Some(p) => Some((std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?, p.display().to_string())),
        None => None,
    };
    let given = match (&answers_text, &wizard_answers) {
        (Some((text, origin)), _) => InstallAnswers::File { text, origin },
        (None, Some(answered)) => InstallAnswers::Wizard(answered),
        (None, None) => {
            return Err(Error::input("install", "the install has answers from neither a file nor the wizard")
                .with_hint("this is a bug in airlock; run the install again with --answers FILE"))
        }
    };
    airlock_installer::ops::upgrade::keep_install(
        &host,
        &prepared.staged.dir,
        &prepared.staged.manifest,
        given,
        airlock_installer::ops::upgrade::DEFAULT_KEEP,
    )?;
    let up = if host.live() {
        let progress = Progress::new(output == Output::Text);
        let wait = WaitOptions { timeout: args.timeout, ..WaitOptions::default() };
        let up = bring_up(&host, &prepared.live, wait, &SystemClock, progress.reporter());
        progress.finish();
        let up = up?;
        let checks =
            airlock_installer::render::platform::wiring::https_checks(&answers, &prepared.staged.manifest.charts);
        let progress = Progress::new(output == Output::Text);
        let ca = std::path::Path::new(airlock_installer::state::CA_CERT);
        let checked = post_install_checks(&host, &checks, ca, answers.node.ip, wait, &SystemClock, progress.reporter());
        progress.finish();
        Some((up, checked?))
    } else {
        None
    };
    match output {
        Output::Json => print_json(&serde_json::json!({
            "preflight": pre,
            "result": done,
            "live": up.as_ref().map(|u| &u.0),
            "checks": up.as_ref().map(|u| &u.1),
            "report": prepared.report,
        })),
        Output::Text => {
            println!(
                "installed {} {} into {}: {} steps applied, {} already done; journal {}",
                prepared.staged.manifest.name,
                prepared.staged.manifest.version,
                root.display(),
                done.applied,
                done.satisfied,
                done.journal.display()
            );
            if let Some((up, checked)) = &up {
                println!(
                    "node {} Ready after {} s; {} charts installed",
                    prepared.live.node,
                    up.node_ready_after_s,
                    up.charts.len()
                );
                for c in checked {
                    println!("  ok {} ({}) after {} s, verified against the site CA", c.name, c.url, c.ok_after_s);
                }
            } else {
                println!("target root: nothing was started; {} starts when the system boots", prepared.live.unit);
            }
        }
    }
    if let (Output::Text, Some(pki)) = (output, &prepared.pki) {
        println!(
            "site CA for the clients to trust: {} (SHA-256 {})",
            airlock_installer::state::CA_CERT,
            pki.ca_fingerprint()
        );
    }
    if let (Output::Text, Some(r)) = (output, &prepared.report) {
        print_install_report(r);
    }
    Ok(0)
}

/// The flags of `upgrade`.
#[derive(Args)]
struct UpgradeFlags {
    #[command(flatten)]
    site: SiteFlags,
    /// Print the plan and the diff and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Accept the plan without asking.
    #[arg(long)]
    yes: bool,
    /// Live: seconds the health gate waits for the node, every chart and the endpoints.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Releases to keep in /var/lib/airlock/releases (never the current or previous).
    #[arg(long, default_value_t = airlock_installer::ops::upgrade::DEFAULT_KEEP)]
    keep: usize,
    /// On rollback, also put the datastore back from the backup (cluster changes
    /// made since the backup are lost); without it the command is printed.
    #[arg(long)]
    restore_datastore: bool,
    /// Undo the interrupted or failed upgrade instead of continuing it.
    #[arg(long)]
    rollback: bool,
    /// Upgrade even though the policy refuses it (a downgrade, a skipped required
    /// release, another HA server not Ready); journaled and reported.
    #[arg(long)]
    allow_policy_override: bool,
    /// Accept a failing preflight check, named by id (repeatable); journaled.
    #[arg(long = "override", value_name = "CHECK")]
    overrides: Vec<String>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn upgrade(bundle: &std::path::Path, f: UpgradeFlags) -> Result<u8> {
    use airlock_installer::host::RootedHost;
    use airlock_installer::live::{SystemClock, WaitOptions};
    use airlock_installer::ops::upgrade::{self, UpgradeOptions};

    let (pubkey, answers, root) = (&f.site.pubkey[..], f.site.answers.as_deref(), f.site.root.as_path());
    let live = root == std::path::Path::new("/");
    let keys = trust::trusted_keys(pubkey, root)?;
    let host = RootedHost::new(root.to_path_buf(), live)?;
    let loaded = answers.map(airlock_installer::site::answers::Answers::load).transpose()?;
    let mut resume = format!("airlock upgrade {}", bundle.display());
    for k in pubkey {
        resume.push_str(&format!(" --pubkey {}", k.display()));
    }
    if let Some(a) = answers {
        resume.push_str(&format!(" --answers {}", a.display()));
    }
    if !live {
        resume.push_str(&format!(" --root {}", root.display()));
    }
    if f.allow_policy_override {
        resume.push_str(" --allow-policy-override");
    }
    for o in &f.overrides {
        resume.push_str(&format!(" --override {o}"));
    }
    resume.push_str(" --yes");
    let mut opts = UpgradeOptions {
        answers: loaded,
        dry_run: true,
        allow_policy_override: f.allow_policy_override,
        rollback: f.rollback,
        restore_datastore: f.restore_datastore,
        keep: f.keep,
        wait: WaitOptions { timeout: Duration::from_secs(f.timeout), ..WaitOptions::default() },
        preflight_overrides: f.overrides.clone(),
        resume_command: resume,
        answers_file: match answers {
            Some(p) => Some((std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?, p.display().to_string())),
            None => None,
        },
    };
    let run = |opts: &UpgradeOptions| {
        let progress = Progress::new(f.output == Output::Text);
        let r = upgrade::run(bundle, &keys, &host, opts, &SystemClock, progress.reporter());
        progress.finish();
        r
    };
    // The plan (and diff) first, through the same code the upgrade runs; then, unless
    // that was all that was asked, the upgrade itself.
    let ask_first = !f.yes && !f.dry_run && !f.rollback;
    if f.dry_run || ask_first {
        let shown = match run(&opts) {
            Ok(r) => r,
            Err(e) => return upgrade_failed(e, f.output),
        };
        if f.output == Output::Text || f.dry_run {
            print_upgrade(&shown, f.output);
        }
        if f.dry_run || !matches!(shown.outcome.as_str(), "dry-run" | "would-roll-back") {
            return Ok(0);
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::input("upgrade", "the plan needs confirming and there is no terminal to ask on")
                .with_hint("review it with --dry-run, then pass --yes"));
        }
        let go = dialoguer::Confirm::new().with_prompt("Upgrade?").default(false).interact().unwrap_or(false);
        if !go {
            return Ok(1);
        }
    }
    opts.dry_run = false;
    match run(&opts) {
        Ok(r) => {
            print_upgrade(&r, f.output);
            Ok(0)
        }
        Err(e) => upgrade_failed(e, f.output),
    }
}

fn upgrade_failed(f: airlock_installer::ops::upgrade::UpgradeFailure, output: Output) -> Result<u8> {
    if output == Output::Json {
        print_json(&serde_json::json!({
            "ok": false,
            "exit_code": f.exit_code,
            "error": f.error.to_string(),
            "restore_datastore_command": f.restore_datastore_command,
        }));
    }
    eprintln!("error: {}", f.error);
    Ok(f.exit_code)
}

fn print_upgrade(r: &airlock_installer::ops::upgrade::UpgradeReport, output: Output) {
    if output == Output::Json {
        print_json(r);
        return;
    }
    if let Some(p) = &r.preflight {
        print_preflight(p);
    }
    if let Some(airlock_installer::ops::upgrade::policy::Decision::Overridden { violations }) = &r.policy {
        for v in violations {
            println!("POLICY OVERRIDDEN (--allow-policy-override, journaled): {v}");
        }
    }
    if let Some(d) = &r.diff {
        println!("upgrade {} -> {}", d.from_version, d.to_version);
        if let Some((a, b)) = &d.distribution {
            println!("  distribution  {a} -> {b}");
        }
        for c in &d.charts {
            let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
            println!("  chart         {} {} -> {}", c.name, v(&c.from), v(&c.to));
        }
        for i in &d.images_added {
            println!("  image    +    {i}");
        }
        for i in &d.images_removed {
            println!("  image    -    {i}");
        }
        for p in &d.files_added {
            println!("  file     +    {}", p.display());
        }
        for p in &d.files_changed {
            println!("  file     ~    {}", p.display());
        }
        for p in &d.files_removed {
            println!("  file     -    {}", p.display());
        }
    }
    match r.outcome.as_str() {
        "already-installed" => println!("release {} is already installed; nothing to do", r.to),
        "dry-run" => println!("dry run: nothing was changed"),
        "would-roll-back" => println!(
            "the unfinished upgrade {} -> {} is rolled back on the next run (release {} is put back); dry run: \
             nothing was changed",
            r.to, r.from, r.to
        ),
        "rolled-back" => println!("rolled back: release {} is current again (was {})", r.to, r.from),
        _ => println!("upgraded {} -> {}{}", r.from, r.to, if r.resumed { " (resumed)" } else { "" }),
    }
    if let Some(b) = &r.backup {
        println!("backup: {} ({} files, datastore: {})", b.dir.display(), b.files.len(), b.datastore);
    }
    if !r.pruned.is_empty() {
        println!("pruned releases: {}", r.pruned.join(", "));
    }
    if let Some(c) = &r.restore_datastore_command {
        println!("the datastore was not restored; to restore it: {c}");
    }
}

/// The platform part of the final report: where things are, never a credential's value.
fn print_install_report(r: &airlock_installer::render::platform::wiring::InstallReport) {
    if r.urls.is_empty() {
        return;
    }
    println!("platform:");
    for (name, url) in &r.urls {
        println!("  {name:<10} {url}");
    }
    println!("credentials (root only, mode 0600; never printed):");
    for c in &r.credentials {
        println!("  {:<32} {}", c.what, c.path.display());
    }
    println!("hand to the customer:");
    for line in &r.hand_to_customer {
        println!("  - {line}");
    }
    println!("this report: {}", airlock_installer::state::REPORT_PATH);
}

fn uninstall(root: &std::path::Path, opts: UninstallOptions, yes: bool, dry_run: bool, output: Output) -> Result<u8> {
    use airlock_installer::host::RootedHost;
    use airlock_installer::ops::uninstall::{apply, plan, Action};
    use airlock_installer::state::Inventory;

    let live = root == std::path::Path::new("/");
    let host = RootedHost::new(root.to_path_buf(), live)?;
    let inv = Inventory::load(&host)?;
    let p = plan(&host, &inv, opts)?;
    if dry_run || output == Output::Text {
        if output == Output::Json && dry_run {
            print_json(&p);
            return Ok(0);
        }
        for a in &p.actions {
            let line = match a {
                Action::Stop { unit, .. } => format!("stop      {unit} and its containers"),
                Action::DisableUnit { unit } => format!("disable   {unit}"),
                Action::Remove { path } => format!("remove    {}", path.display()),
                Action::KeepChanged { path } => {
                    format!("KEEP      {} (changed since the install; --force removes it)", path.display())
                }
                Action::RemoveDirIfEmpty { path } => format!("rmdir     {} (if empty)", path.display()),
                Action::RemoveTree { path } => format!("remove -r {}", path.display()),
            };
            println!("  {line}");
        }
        if dry_run {
            return Ok(0);
        }
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::input(
                "uninstall",
                "removing the install needs confirming and there is no terminal to ask on",
            )
            .with_hint("review it with --dry-run, then pass --yes"));
        }
        let go = dialoguer::Confirm::new().with_prompt("Remove it?").default(false).interact().unwrap_or(false);
        if !go {
            return Ok(1);
        }
    }
    let r = apply(&host, &p)?;
    match output {
        Output::Json => print_json(&r),
        Output::Text => {
            println!("removed {} {} install from {}: {} paths", inv.distribution, inv.unit, root.display(), r.removed);
            for k in &r.kept_changed {
                println!("  kept {} (changed since the install)", k.display());
            }
            for k in &r.kept_dirs {
                println!("  kept {} (not empty: holds files that are not ours)", k.display());
            }
        }
    }
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn preflight(
    bundle: &std::path::Path,
    pubkey: &[PathBuf],
    answers: Option<&std::path::Path>,
    profile: Option<&str>,
    mode: Option<PreflightMode>,
    root: &std::path::Path,
    overrides: &[String],
    output: Output,
) -> Result<u8> {
    use airlock_installer::bundle::delta::read_profiles_for_site;
    use airlock_installer::site::answers::{Answers, Role};
    use airlock_installer::site::preflight::site::{self, SiteInput};
    use airlock_installer::site::preflight::Mode;

    let answers = answers.map(Answers::load).transpose()?;
    let keys = trust::trusted_keys(pubkey, root)?;
    let files = BundleFiles::locate(bundle)?;
    let progress = Progress::new(output == Output::Text);
    // A delta's profiles come from the release installed under the root.
    let read = read_profiles_for_site(&files, &keys, root, progress.reporter());
    progress.finish();
    let (manifest, profiles) = read?;
    let wanted = match (&answers, profile) {
        (Some(a), _) => a.profile.clone(),
        (None, Some(p)) => p.to_string(),
        (None, None) if profiles.len() == 1 => profiles[0].name.clone(),
        (None, None) => {
            let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::input("--profile", "the bundle has several profiles and none was chosen")
                .with_hint(format!("pass --answers FILE or --profile NAME ({})", names.join(", "))));
        }
    };
    let prof = profiles.iter().find(|p| p.name == wanted).ok_or_else(|| {
        let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        Error::input("profile", format!("the bundle has no profile `{wanted}`"))
            .with_hint(format!("profiles in this bundle: {}", names.join(", ")))
    })?;
    let image_bytes = site::image_bytes(&manifest);
    let mut input = match &answers {
        Some(a) => SiteInput::from_answers(prof, a, image_bytes, overrides),
        None => SiteInput {
            profile: prof,
            role: Role::Server,
            mode: Mode::Install,
            image_bytes,
            data_dir: PathBuf::from(airlock_installer::site::answers::DEFAULT_DATA_DIR),
            join_token_file: None,
            overrides: overrides.to_vec(),
        },
    };
    if let Some(m) = mode {
        input.mode = match m {
            PreflightMode::Install => Mode::Install,
            PreflightMode::Join => Mode::Join,
            PreflightMode::Upgrade => Mode::Upgrade,
        };
    }
    let report = site::check(root, &input)?;
    match output {
        Output::Json => print_json(&report),
        Output::Text => print_preflight(&report),
    }
    Ok(if report.may_proceed() { 0 } else { EXIT_PREFLIGHT })
}

fn status(root: &std::path::Path, output: Output) -> Result<u8> {
    use airlock_installer::host::RootedHost;
    use airlock_installer::ops::status::{status, Live, StatusOptions};

    let live = root == std::path::Path::new("/");
    let host = RootedHost::new(root.to_path_buf(), live)?;
    let r = status(&host, &StatusOptions::now())?;
    let code = if r.healthy { 0 } else { EXIT_UNHEALTHY };
    if output == Output::Json {
        print_json(&r);
        return Ok(code);
    }
    match &r.release {
        Some(rel) => {
            println!("release     {} {} (profile {})", rel.bundle, rel.version, rel.profile);
            println!("bundle      manifest sha256:{}, signed by key {}", rel.manifest_sha256, rel.signer);
        }
        None => println!("release     none finished here yet"),
    }
    for c in &r.components {
        let ns = c.namespace.as_deref().map(|n| format!(" -> {n}")).unwrap_or_default();
        let health = c.health.as_deref().map(|h| format!("  [{h}]")).unwrap_or_default();
        println!("  {:12} {:24} {}{ns}{health}", c.kind, c.name, c.version);
    }
    for c in &r.certificates {
        println!("  cert {:>5} days  {}  {} (until {})", c.days_left, c.path.display(), c.subject, c.not_after);
    }
    if let Some(l) = &r.last_run {
        println!(
            "last run    {} {:?}, started {}{}; {} applied, {} already done, {} rolled back",
            l.run_id,
            l.outcome,
            l.started,
            l.finished.as_deref().map(|f| format!(", finished {f}")).unwrap_or_default(),
            l.steps_applied,
            l.steps_satisfied,
            l.steps_rolled_back
        );
        for o in l.overrides.iter().filter(|o| o.applied) {
            println!("  override  {}: {}", o.id, o.detail);
        }
    }
    match &r.live {
        Live::NotLive { reason } => println!("live        not live: {reason}"),
        Live::Checked { unit, unit_state, nodes, .. } => {
            println!("live        {unit} {unit_state}");
            for (n, s) in nodes {
                println!("  node {n} {s}");
            }
        }
    }
    for d in &r.drift {
        println!("  DRIFT     {} ({})", d.path.display(), d.problem);
    }
    for w in &r.warnings {
        println!("  warning   {w}");
    }
    if let Some(p) = &r.pending {
        println!("  PENDING   {}", p.state);
        println!("  hint: {}", p.hint);
    }
    if r.healthy {
        println!("healthy");
    } else {
        println!("NEEDS ATTENTION (exit {EXIT_UNHEALTHY}):");
        for p in &r.problems {
            println!("  - {p}");
        }
    }
    Ok(code)
}

fn support_bundle(root: &std::path::Path, out: &std::path::Path, output: Output) -> Result<u8> {
    use airlock_installer::host::RootedHost;
    use airlock_installer::ops::support::{collect, SupportOptions};

    let live = root == std::path::Path::new("/");
    let host = RootedHost::new(root.to_path_buf(), live)?;
    let progress = Progress::new(output == Output::Text);
    let r = collect(&host, &SupportOptions::new(out.to_path_buf()), progress.reporter());
    progress.finish();
    let r = r?;
    if output == Output::Json {
        print_json(&r);
        return Ok(0);
    }
    let m = &r.manifest;
    println!("support bundle {} ({} bytes, mode 0600): {} files", r.output.display(), r.archive_bytes, m.files.len());
    let total: usize = m.redactions.values().sum();
    println!("redacted {total} values:");
    for (rule, n) in &m.redactions {
        println!("  {rule:24} {n}");
    }
    if !m.not_collected.is_empty() {
        println!("not collected ({}; MANIFEST.json says why):", m.not_collected.len());
        for n in &m.not_collected {
            println!("  {}: {}", n.source, n.reason);
        }
    }
    Ok(0)
}

fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("reports always serialise"));
}

/// Every check short of a pass with its fix, then a one-line summary.
fn print_preflight(r: &airlock_installer::site::preflight::PreflightReport) {
    use airlock_installer::site::preflight::Status as S;
    for c in &r.checks {
        let word = match c.status {
            S::Pass | S::Skipped => continue,
            S::Warn => "warn",
            S::Fail => "FAIL",
            S::Overridden => "overridden",
        };
        println!("  {word:10} {}: {}", c.id, c.detail);
        if let Some(h) = &c.hint {
            println!("  {:10} hint: {h}", "");
        }
        if let Some(n) = &c.note {
            println!("  {:10} note: {n}", "");
        }
    }
    println!(
        "preflight ({:?}, {}): {} passed, {} warnings, {} failed, {} overridden, {} skipped",
        r.mode,
        r.distribution,
        r.passed().count(),
        r.warnings().count(),
        r.failed().count(),
        r.overridden().count(),
        r.skipped().count()
    );
}

/// Exit code of `pki status` when a certificate has expired (docs/exit-codes.md).
const EXIT_EXPIRED: u8 = 10;

fn pki(command: PkiCommand) -> Result<u8> {
    use airlock_installer::host::RootedHost;
    use airlock_installer::site::pki::{self, RenewOptions};

    let host = |root: &std::path::Path| RootedHost::new(root.to_path_buf(), false);
    match command {
        PkiCommand::Status { root, within, output } => {
            let r = pki::status(&host(&root)?, within)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r).expect("json")),
                Output::Text => print_pki_status(&root, &r),
            }
            for c in &r.certificates {
                if c.expiring {
                    eprintln!(
                        "warning: {} expires in {} days ({}); run `airlock pki renew`",
                        c.name, c.days_left, c.not_after
                    );
                }
                if c.key_matches == Some(false) {
                    eprintln!(
                        "warning: the key next to {} does not belong to it; run `airlock pki renew`",
                        c.path.display()
                    );
                }
            }
            if r.expired > 0 {
                let names: Vec<&str> = r.certificates.iter().filter(|c| c.expired).map(|c| c.name.as_str()).collect();
                eprintln!("error: expired: {}", names.join(", "));
                eprintln!("  hint: `airlock pki renew` re-issues self-signed leaves; customer certificates come from the customer's IT");
                return Ok(EXIT_EXPIRED);
            }
            Ok(0)
        }
        PkiCommand::Renew { root, within, dry_run, output } => {
            let r = pki::renew(&host(&root)?, RenewOptions { within_days: within, dry_run })?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r).expect("json")),
                Output::Text => {
                    let verb = if dry_run { "would renew" } else { "renewed" };
                    for n in &r.renewed {
                        match &n.new_not_after {
                            Some(new) => println!(
                                "{verb} {} ({}): valid until {new} (was {})",
                                n.name, n.reason, n.old_not_after
                            ),
                            None => println!("{verb} {} ({}; valid until {})", n.name, n.reason, n.old_not_after),
                        }
                    }
                    if !r.kept.is_empty() {
                        println!("kept {} (more than {within} days left)", r.kept.join(", "));
                    }
                    if !dry_run && !r.renewed.is_empty() {
                        println!("the platform's TLS Secrets still hold the old certificates until `airlock install` runs again");
                    }
                }
            }
            Ok(0)
        }
    }
}

fn print_pki_status(root: &std::path::Path, r: &airlock_installer::site::pki::StatusReport) {
    let mode = r.mode.map(|m| m.to_string()).unwrap_or_else(|| "unknown: no pki.json".to_string());
    println!("site PKI under {} (mode {mode})", root.join("etc/airlock/pki").display());
    for c in &r.certificates {
        let state = if c.expired {
            "EXPIRED"
        } else if c.expiring {
            "expiring"
        } else {
            "ok"
        };
        println!("  {:9} {:8} {} days left, not after {}", c.name, state, c.days_left, c.not_after);
        println!("            subject {}", c.subject);
        if !c.sans.is_empty() {
            println!("            SANs    {}", c.sans.join(", "));
        }
        println!("            sha256  {}", c.sha256);
    }
}

/// The host name to suggest for `node.name` (read, not changed).
fn local_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_lowercase()).filter(|h| !h.is_empty())
}

/// The wizard's front end: dialoguer prompts on the terminal. Validation is the
/// library's (the same as for answers files); this only draws and reads.
struct TerminalPrompter;

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
    if let Some(d) = &r.delta {
        print_delta(d);
    }
    for a in &r.artifacts {
        let mark = match a.status {
            Status::Ok => "ok         ",
            Status::Corrupt => "CORRUPT    ",
            Status::Unsafe => "UNSAFE     ",
            Status::NotChecked => "not checked",
            Status::FromBase => "from base  ",
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
    if r.ok && r.delta.is_some() {
        println!("{title}: verified, every entry this delta carries matches the signed manifest");
    } else if r.ok {
        println!("{title}: verified, every artifact matches the signed manifest");
    } else {
        println!("{title}: FAILED (exit {})", r.exit_code);
    }
}

/// The delta line of `verify` and `inspect`.
fn print_delta(d: &airlock_installer::bundle::verify::DeltaReport) {
    println!(
        "delta over {} {} (manifest sha256 {}): {} entries ({} bytes) expected from the base, not checked here",
        d.base_name, d.base_version, d.base_manifest_sha256, d.entries_from_base, d.bytes_from_base
    );
}

fn print_inspect(r: &inspect::InspectReport) {
    println!("bundle      {} {}", r.name, r.version);
    println!("created     {}", r.created);
    if let Some(d) = &r.delta {
        print_delta(d);
    }
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
    for k in &r.key_statements {
        println!("key statement {} ({})", k.label(), k.path);
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
            // The installer downloads nothing; transfers are the bundler's.
            Event::Entry { .. }
            | Event::TransferStart { .. }
            | Event::TransferProgress { .. }
            | Event::TransferDone { .. } => {}
        }
    }
}
