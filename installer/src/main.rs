//! `airlock`: thin command-line front of the installer library. It parses flags, asks
//! and draws progress on a terminal, hands each command to its library entry
//! (`airlock_installer::ops`, `bundle`, `site`), renders the report as text or JSON,
//! and maps the outcome to one [`ExitStatus`] (docs/exit-codes.md).

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use airlock_format::error::{Error, Result};
use airlock_format::exit::ExitStatus;
use airlock_format::parts::BundleFiles;
use airlock_installer::bundle::images::{write_image_archive, Compression};
use airlock_installer::bundle::verify::VerifyOptions;
use airlock_installer::bundle::{inspect, staging, trust, verify};
use airlock_installer::host::ssh::{SshOptions, SystemSsh};
use airlock_installer::host::RootedHost;
use airlock_installer::live::{SystemClock, WaitOptions};
use airlock_installer::ops::{self, install, upgrade};

use airlock_term::{print_json, say, Output, Ui};
use cli::args::{
    BackupCommand, Cli, ClusterFlags, Command, InstallFlags, LdapCommand, PkiCommand, PreflightMode, PushArgs,
    RegistryCommand, ServeArgs, UpgradeFlags,
};
use cli::render;
use cli::term::{confirm, local_hostname, TerminalPrompter};

fn main() -> ExitCode {
    let cli: Cli = airlock_term::parse();
    let ui = Ui::init(&cli.global, Box::new(redact_log_line));
    match run(cli.command, ui) {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("error: {e}");
            ExitStatus::from(e.kind).into()
        }
    }
}

/// `--verbose` lines pass the support bundle's fixed redaction rules (credential
/// fields, `PASSWORD=` assignments, private keys) on their way out; the library logs
/// paths and command lines, never the contents of a secret.
fn redact_log_line(line: &str) -> String {
    airlock_installer::ops::support::redact::Redactor::new(&[]).redact(line).0
}

fn run(command: Command, ui: Ui) -> Result<ExitStatus> {
    match command {
        Command::Verify { bundle, pubkey, check_parts } => {
            let keys = trust::trusted_keys(&pubkey, Path::new("/"))?;
            let files = BundleFiles::locate(&bundle)?;
            let progress = ui.progress();
            let report = verify::verify(&files, &keys, &VerifyOptions { check_parts }, &progress);
            progress.finish();
            ui.show(&report, render::print_verify);
            Ok(ExitStatus::from_code(report.exit_code as u8).unwrap_or(ExitStatus::Corrupt))
        }
        Command::Inspect { bundle, pubkey, sbom } => {
            let files = BundleFiles::locate(&bundle)?;
            let keys = if pubkey.is_empty() { None } else { Some(trust::trusted_keys(&pubkey, Path::new("/"))?) };
            if sbom {
                let bytes = inspect::sbom(&files, keys.as_deref())?;
                std::io::Write::write_all(&mut std::io::stdout(), &bytes).map_err(|e| Error::io("stdout", e))?;
                return Ok(ExitStatus::Success);
            }
            let r = inspect::inspect(&files, keys.as_deref())?;
            ui.show(&r, render::print_inspect);
            Ok(ExitStatus::Success)
        }
        Command::Install { bundle, flags, cluster } => install(bundle, flags, None, cluster, ui),
        Command::Join { bundle, server, token_file, flags } => {
            install(bundle, flags, Some(install::JoinOverrides { server, token_file }), ClusterFlags::default(), ui)
        }
        Command::Upgrade { bundle, flags, cluster } => upgrade(&bundle, flags, cluster, ui),
        Command::Uninstall { root, purge, force, yes, dry_run, all_nodes, cluster } => {
            let opts = ops::uninstall::UninstallOptions { force, purge };
            if all_nodes {
                return uninstall_all_nodes(&root, opts, yes, &cluster, ui);
            }
            uninstall(&root, opts, yes, dry_run, ui)
        }
        Command::Preflight { bundle, pubkey, answers, profile, mode, root, overrides } => {
            use airlock_installer::site::preflight::Mode;
            let mode = mode.map(|m| match m {
                PreflightMode::Install => Mode::Install,
                PreflightMode::Join => Mode::Join,
                PreflightMode::Upgrade => Mode::Upgrade,
            });
            if answers.is_none() && profile.is_none() && airlock_installer::site::answers::kept::exists(&root) {
                let kept =
                    airlock_installer::host::shown_path(&root, Path::new(airlock_installer::state::KEPT_ANSWERS_PATH));
                eprintln!("note: no --answers given: using the site's kept answers, {}", kept.display());
            }
            let opts = ops::preflight::PreflightOptions { bundle, pubkey, answers, profile, mode, root, overrides };
            let progress = ui.progress();
            let report = ops::preflight::run(&opts, &progress);
            progress.finish();
            let report = report?;
            ui.show(&report, render::print_preflight);
            Ok(if report.may_proceed() { ExitStatus::Success } else { ExitStatus::Preflight })
        }
        Command::Pki { command } => pki(command, ui),
        Command::Registry { command: RegistryCommand::Push(args) } => push(args, ui),
        Command::Registry { command: RegistryCommand::Serve(args) } => serve(args, ui),
        Command::Ldap { command: LdapCommand::Test { answers, root } } => {
            let a = airlock_installer::site::answers::Answers::load(&answers)?;
            let Some(settings) = a.ldap else {
                return Err(Error::input(answers.display().to_string(), "the answers have no `ldap` section")
                    .with_hint(
                    "add ldap.url, ldap.bind_dn, ldap.bind_password, ldap.users_dn and ldap.preset (docs/answers.md)",
                ));
            };
            let result = airlock_installer::site::ldap::probe(&settings);
            render::print_ldap(&result, ui.output, ExitStatus::Ldap.code());
            let host = RootedHost::new(root.clone(), root == Path::new("/"))?;
            if ops::report::record_ldap_test(&host, &settings.url.to_string(), &result)? && !ui.json() {
                say!("kept for `airlock report`: {}", render::on_site_path(&root, ops::report::LDAP_TEST_PATH));
            }
            Ok(if result.is_ok() { ExitStatus::Success } else { ExitStatus::Ldap })
        }
        Command::Status { root } => {
            let host = RootedHost::new(root.clone(), root == Path::new("/"))?;
            let r = ops::status::status(&host, &ops::status::StatusOptions::now())?;
            ui.show(&r, |r| render::print_status(r, ExitStatus::NeedsAttention.code()));
            Ok(if r.healthy { ExitStatus::Success } else { ExitStatus::NeedsAttention })
        }
        Command::Report { root, output_file, verify, pubkey } => {
            use airlock_installer::ops::report;
            let host = RootedHost::new(root.clone(), root == Path::new("/"))?;
            if let Some(file) = verify {
                let key_path = pubkey.unwrap_or_else(|| root.join(report::REPORT_PUBKEY_PATH.trim_start_matches('/')));
                let read =
                    |p: &Path, hint: &str| std::fs::read(p).map_err(|e| Error::io(p, e).with_hint(hint.to_string()));
                let key =
                    read(&key_path, "pass the site's public report key with --pubkey, or the site's root with --root")?;
                let json = read(&file, "name the signed JSON report (report.json)")?;
                let sig_path = PathBuf::from(format!("{}.minisig", file.display()));
                let sig = read(&sig_path, "the signature lies next to the report, as `airlock report -o` wrote it")?;
                let file_name = file.display().to_string();
                let k =
                    report::verify(&String::from_utf8_lossy(&key), &json, &String::from_utf8_lossy(&sig), &file_name)?;
                let out = serde_json::json!({ "file": file_name, "valid": true, "key_id": k.key_id_hex() });
                ui.show(&out, |_| say!("{file_name}: signed by the site report key {}: valid", k.key_id_hex()));
                return Ok(ExitStatus::Success);
            }
            let operator = ["SUDO_USER", "USER"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
                .unwrap_or_else(|| "unknown".into());
            let now = ops::status::StatusOptions::now().now_unix;
            let r = report::readiness(&host, &report::ReportOptions { operator, now_unix: now })?;
            let written = match &output_file {
                Some(out) => {
                    let key = report::site_key(&host)?;
                    let json = r.to_json();
                    let sig = report::sign(&key, &json, &r)?;
                    Some(report::write_files(out, &r, &json, &sig)?)
                }
                None => None,
            };
            ui.show(&r, |r| render::print_readiness(r, written.as_ref(), &root, ExitStatus::NeedsAttention.code()));
            // As `airlock status`: a line the evidence shows failed needs an operator
            // (the page and the signed JSON are written all the same).
            Ok(if r.has_failed() { ExitStatus::NeedsAttention } else { ExitStatus::Success })
        }
        Command::SupportBundle { output_file, root, all_nodes, cluster } => {
            let host = RootedHost::new(root.clone(), root == Path::new("/"))?;
            let progress = ui.progress();
            let mut opts = ops::support::SupportOptions::new(output_file);
            if all_nodes {
                let ssh = system_ssh(&cluster);
                opts.nodes = site_run(&host, &ssh, &cluster)?.fetch_support(&progress);
            }
            let r = ops::support::collect(&host, &opts, &progress);
            progress.finish();
            let r = r?;
            if let Some(run) = &r.manifest.working_run {
                eprintln!("warning: {run} was working on this site while this was collected: its state files may be mid-change (MANIFEST.json says so too)");
            }
            ui.show(&r, render::print_support);
            Ok(ExitStatus::Success)
        }
        Command::Backup { command: BackupCommand::Schedule { every, keep, to, airlock, root } } => {
            use ops::backup::schedule;
            let every = schedule::parse_interval(&every)
                .map_err(|e| Error::input("--every", e).with_hint("write the interval as 30m, 24h or 7d"))?;
            let host = RootedHost::new(root.clone(), root == Path::new("/"))?;
            let r = schedule::schedule(&host, &schedule::ScheduleOptions { every, keep, to, airlock })?;
            ui.show(&r, render::print_backup_schedule);
            Ok(ExitStatus::Success)
        }
        Command::Backup { command: BackupCommand::Create { output_file, keep, root } } => {
            let host = RootedHost::new(root.clone(), root == Path::new("/"))?;
            let progress = ui.progress();
            let opts = ops::backup::CreateOptions { output: output_file, keep, s3: Default::default() };
            let r = ops::backup::create(&host, &opts, &progress);
            progress.finish();
            let r = r?;
            ui.show(&r, render::print_backup);
            Ok(ExitStatus::Success)
        }
        Command::Backup { command: BackupCommand::Verify { file, identity } } => {
            // pg_restore runs on this machine; nothing is written.
            let host = RootedHost::new(PathBuf::from("/"), true)?;
            let progress = ui.progress();
            let now_unix = ops::status::StatusOptions::now().now_unix;
            let r = ops::backup::verify(&host, &ops::backup::VerifyOptions { file, identity, now_unix }, &progress);
            progress.finish();
            let r = r?;
            ui.show(&r, render::print_backup_verify);
            Ok(ExitStatus::Success)
        }
        Command::Restore { drill: Some(drill), identity, check, site, .. } => {
            let checks = check.iter().map(|p| ops::backup::ConsistencyCheck::load(p)).collect::<Result<Vec<_>>>()?;
            let now_unix = ops::status::StatusOptions::now().now_unix;
            let opts = ops::backup::DrillOptions { file: drill, identity, checks, now_unix };
            let host = RootedHost::new(site.root.clone(), site.root == Path::new("/"))?;
            let verifier = RootedHost::new(PathBuf::from("/"), true)?;
            let progress = ui.progress();
            let r = ops::backup::drill(&host, &verifier, &opts, &progress);
            progress.finish();
            let r = r?;
            ui.show(&r, render::print_drill);
            if r.passed {
                Ok(ExitStatus::Success)
            } else {
                Err(Error::corrupt(
                    opts.file.display().to_string(),
                    format!("failed its restore drill: {}", r.failures().join("; ")),
                )
                .with_hint("take a new backup and drill it; the record is in /var/lib/airlock/restore-drill.json"))
            }
        }
        Command::Restore { file, identity, bundle, site, dry_run, timeout, .. } => {
            let (Some(file), Some(bundle)) = (file, bundle) else {
                return Err(Error::input("restore", "needs a backup FILE and --bundle, or --drill FILE"));
            };
            if site.answers.is_none() {
                return Err(Error::input("--answers", "a restore needs the new node's answers")
                    .with_hint("pass --answers FILE: the site's answers with this node's name and address"));
            }
            let install = install::InstallOptions {
                bundle,
                pubkey: site.pubkey,
                answers: site.answers,
                root: site.root,
                timeout: Duration::from_secs(timeout),
                hostname: local_hostname(),
                dry_run,
                ..Default::default()
            };
            let verifier = RootedHost::new(PathBuf::from("/"), true)?;
            let now_unix = ops::status::StatusOptions::now().now_unix;
            let opts = ops::backup::RestoreOptions { file, identity, install, now_unix, s3: Default::default() };
            let progress = ui.progress();
            let r = ops::backup::restore(&opts, &verifier, &mut TerminalPrompter, &SystemClock, &progress);
            progress.finish();
            let r = r?;
            ui.show(&r, render::print_restore);
            Ok(ExitStatus::Success)
        }
        Command::Extract { bundle, pubkey, dir, image_archive } => {
            let keys = trust::trusted_keys(&pubkey, Path::new("/"))?;
            let files = BundleFiles::locate(&bundle)?;
            let progress = ui.progress();
            let staged = staging::extract(&files, &keys, &dir, &progress);
            progress.finish();
            let staged = staged?;
            let m = &staged.manifest;
            if let Some(out) = &image_archive {
                if m.images.is_empty() {
                    return Err(Error::input(bundle.display().to_string(), "the bundle carries no images"));
                }
                let zst = out.to_string_lossy().ends_with(".zst");
                let c = if zst { Compression::Zstd { level: 3 } } else { Compression::None };
                write_image_archive(&staged.path("oci"), out, c, 0)?;
            }
            let r = serde_json::json!({
                "name": m.name, "version": m.version, "signer": staged.signer.key_id_hex(),
                "dir": staged.dir, "image_archive": image_archive,
            });
            ui.show(&r, |_| {
                say!(
                    "verified {} {} (signed by {}) into {}",
                    m.name,
                    m.version,
                    staged.signer.key_id_hex(),
                    staged.dir.display()
                );
                if let Some(out) = &image_archive {
                    say!("image archive {}", out.display());
                }
            });
            Ok(ExitStatus::Success)
        }
        Command::Schema { file: cli::args::SchemaFile::Answers } => {
            // A schema is a document, printed whole whatever `--output` says.
            print_json(&airlock_installer::site::answers::schema::json_schema());
            Ok(ExitStatus::Success)
        }
        Command::Completions(c) => {
            c.print::<Cli>();
            Ok(ExitStatus::Success)
        }
        Command::Man(m) => {
            for p in m.write::<Cli>()? {
                say!("wrote {}", p.display());
            }
            Ok(ExitStatus::Success)
        }
    }
}

/// `airlock install` and `airlock join`: the plan first (verified, staged, checked),
/// shown, confirmed, then applied.
fn install(
    bundle: PathBuf,
    f: InstallFlags,
    join: Option<install::JoinOverrides>,
    c: ClusterFlags,
    ui: Ui,
) -> Result<ExitStatus> {
    use std::io::IsTerminal;
    let tty = std::io::stdin().is_terminal();
    let kept = airlock_installer::site::answers::kept::exists(&f.site.root);
    if f.site.answers.is_none() && !tty && !kept {
        return Err(Error::input("--answers", "no answers file given and no terminal to ask on")
            .with_hint("pass --answers FILE (docs/answers.md; examples/demo/answers.yaml is an example)"));
    }
    let opts = install::InstallOptions {
        bundle,
        pubkey: f.site.pubkey,
        answers: f.site.answers,
        root: f.site.root,
        overrides: f.overrides,
        timeout: Duration::from_secs(f.timeout),
        join,
        hostname: local_hostname(),
        dry_run: f.dry_run || f.check,
        // The site's kept answers, without --answers: a check, a dry run or a run with
        // no terminal takes them as they are; on a terminal the wizard pre-fills them.
        kept: if f.dry_run || f.check || !tty { install::KeptUse::Take } else { install::KeptUse::Prefill },
    };
    let text = !ui.json();
    let verb = if opts.join.is_some() { "join" } else { "install" };
    if opts.answers.is_some() {
        cli::term::say_resume_on_interrupt(verb);
    }
    let progress = ui.progress();
    let ready = install::plan_install(&opts, &mut TerminalPrompter, &progress);
    progress.finish();
    let ready = ready?;
    if let Some(origin) = ready.kept_answers_origin() {
        eprintln!("note: no --answers given: using the site's kept answers, {origin}");
    }
    if text {
        if let Some(answered) = ready.wizard_answers() {
            render::print_wizard_answers(answered);
        }
    }
    if let Some(path) = &f.save_answers {
        match ready.wizard_answers() {
            Some(answered) => {
                airlock_installer::site::answers::kept::save_answers(path, answered, &opts.root)?;
                eprintln!("saved the answers to {} (secrets left out; see its comments)", path.display());
            }
            None => eprintln!("warning: --save-answers: the wizard asked nothing, so there is nothing to save"),
        }
    }
    for w in &ready.warnings {
        eprintln!("warning: {w}");
    }
    if text {
        render::print_preflight(&ready.preflight);
    }
    if f.dry_run || f.check {
        if opts.join.is_none() && ready.answers.nodes.len() > 1 {
            eprintln!(
                "note: {} plans this node only: the other {} nodes of `nodes` are not contacted (docs/cluster.md)",
                if f.dry_run { "--dry-run" } else { "--check" },
                ready.answers.nodes.len() - 1
            );
        }
        match ui.output {
            Output::Json => print_json(&serde_json::json!({ "preflight": ready.preflight, "plan": ready.plan })),
            Output::Text => render::print_plan(&ready.plan),
        }
        if !ready.preflight.may_proceed() {
            return Ok(ExitStatus::Preflight);
        }
        let pending = ready.plan.pending > 0 || ready.plan.blocked > 0;
        return Ok(if f.check && pending { ExitStatus::Pending } else { ExitStatus::Success });
    }
    if !ready.preflight.may_proceed() {
        if ui.json() {
            print_json(&serde_json::json!({ "preflight": ready.preflight }));
        }
        let failed: Vec<&str> = ready.preflight.failed().map(|c| c.id.as_str()).collect();
        eprintln!(
            "error: preflight: {} failed; nothing was changed\nhint: fix what each hint says and run again, or accept a \
             check by name with --override {} (journaled)",
            failed.join(", "),
            failed.first().copied().unwrap_or("CHECK")
        );
        return Ok(ExitStatus::Preflight);
    }
    // With `nodes:`, the library runs the cluster's install (docs/cluster.md): every
    // other node is prepared before the plan is confirmed and before anything changes
    // anywhere; this node is installed, then the others join.
    let Some(inputs) = cluster_run_inputs(&ready, &opts, c.accept_new_host_keys)? else {
        if !f.yes && !confirm_install(&ready)? {
            return Ok(ExitStatus::Input);
        }
        // (After the wizard and the confirmation, which own the terminal while they ask.)
        cli::term::say_resume_on_interrupt(verb);
        let progress = ui.progress();
        let done = install::apply_install(ready, &opts, &SystemClock, &progress);
        progress.finish();
        ui.show(&done?, render::print_installed);
        return Ok(ExitStatus::Success);
    };
    let ssh = system_ssh(&c);
    let host = RootedHost::new(opts.root.clone(), opts.live())?;
    let run = inputs.run(&ssh, &host);
    let mut here = ClusterInstallHere { ready: Some(ready), opts: &opts, yes: f.yes, ui, verb };
    use airlock_installer::ops::cluster::install::{run_cluster_install, ClusterInstall};
    match run_cluster_install(&run, &mut here)? {
        ClusterInstall::NotReady { prepared } => {
            let preflight = here.ready.as_ref().map(|r| &r.preflight);
            ui.show(&serde_json::json!({ "preflight": preflight, "cluster": prepared }), |_| {
                render::print_cluster(&prepared)
            });
            eprintln!(
                "error: {} not ready; nothing was installed on any node\nhint: fix what each node's hint says and run \
                 the install again (what was sent already is not sent again)",
                failed_names(&prepared)
            );
            Ok(ExitStatus::Preflight)
        }
        ClusterInstall::Declined => Ok(ExitStatus::Input),
        ClusterInstall::Installed { here: done, report, incoming_left } => {
            warn_not_removed(&incoming_left);
            match ui.output {
                Output::Json => print_json(&serde_json::json!({ "installed": done, "cluster": report })),
                Output::Text => render::print_cluster(&report),
            }
            Ok(if report.ok() { ExitStatus::Success } else { ExitStatus::NeedsAttention })
        }
    }
}

/// Shows what the plan would apply (on a terminal) and asks to apply it.
fn confirm_install(ready: &install::Ready) -> Result<bool> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        say!("{} of {} steps to apply to {}", ready.plan.pending, ready.plan.steps.len(), ready.target());
    }
    confirm("install", "the plan", "Apply the plan?")
}

/// This node's part in the cluster's install: the planned install, confirmed once every
/// other node is ready, applied with its progress and report on the terminal.
struct ClusterInstallHere<'a> {
    /// Taken when this node is installed.
    ready: Option<install::Ready>,
    opts: &'a install::InstallOptions,
    yes: bool,
    ui: Ui,
    verb: &'static str,
}

impl ops::cluster::install::ThisNode for ClusterInstallHere<'_> {
    type Installed = install::Installed;

    fn progress(&self) -> Box<dyn airlock_format::report::Reporter> {
        Box::new(self.ui.progress())
    }

    fn prepared(&mut self, report: &ops::cluster::ClusterReport) -> Result<bool> {
        if !self.ui.json() {
            render::print_cluster(report);
        }
        match &self.ready {
            Some(ready) if !self.yes => confirm_install(ready),
            _ => Ok(true),
        }
    }

    fn install(&mut self) -> Result<install::Installed> {
        let ready = self.ready.take().expect("this node is installed once");
        cli::term::say_resume_on_interrupt(self.verb);
        let progress = self.ui.progress();
        let done = install::apply_install(ready, self.opts, &SystemClock, &progress);
        progress.finish();
        let done = done?;
        if !self.ui.json() {
            render::print_installed(&done);
        }
        Ok(done)
    }
}

/// What a cluster run needs from the first server's planned install, when the answers
/// list other nodes (and this is not a join).
struct ClusterInputs {
    nodes: Vec<airlock_installer::site::answers::SiteNode>,
    answers_text: String,
    bundle: PathBuf,
    key_files: Vec<PathBuf>,
    installer: PathBuf,
    version: String,
    overrides: Vec<String>,
    accept_new_host_keys: bool,
}

impl ClusterInputs {
    fn run<'a>(
        &self,
        remote: &'a dyn airlock_installer::host::ssh::Remote,
        host: &'a (dyn airlock_installer::host::Host + Sync),
    ) -> ops::cluster::ClusterRun<'a> {
        ops::cluster::ClusterRun {
            remote,
            host,
            nodes: self.nodes.clone(),
            answers_text: self.answers_text.clone(),
            bundle: self.bundle.clone(),
            key_files: self.key_files.clone(),
            installer: self.installer.clone(),
            version: self.version.clone(),
            overrides: self.overrides.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            purpose: ops::cluster::Purpose::Install,
            claimed: Default::default(),
        }
    }
}

fn cluster_run_inputs(
    ready: &install::Ready,
    opts: &install::InstallOptions,
    accept_new_host_keys: bool,
) -> Result<Option<ClusterInputs>> {
    if opts.join.is_some() || ready.answers.nodes.len() < 2 || opts.dry_run {
        return Ok(None);
    }
    let Some(answers) = &opts.answers else {
        return Err(Error::input("nodes", "the other nodes are set up from an answers file only")
            .with_hint("pass --answers FILE (the file that lists `nodes`)"));
    };
    let staged = &ready.prepared.staged;
    if !staged.manifest.entries.iter().any(|e| e.path == "installer/airlock") {
        return Err(Error::input(opts.bundle.display().to_string(), "carries no installer binary (installer/airlock)")
            .with_hint(
                "the other nodes run the installer from the bundle: build it with `airlock-bundler create --installer`",
            ));
    }
    Ok(Some(ClusterInputs {
        nodes: ready.answers.nodes.clone(),
        answers_text: airlock_installer::site::answers::kept::read_answers_file(answers)?,
        bundle: opts.bundle.clone(),
        key_files: trust::trusted_key_files(&opts.pubkey, &opts.root)?,
        installer: staged.path("installer/airlock"),
        version: staged.manifest.version.clone(),
        overrides: opts.overrides.clone(),
        accept_new_host_keys,
    }))
}

/// `airlock upgrade`: the plan and diff first, through the same code the upgrade runs;
/// then, unless that was all that was asked, the upgrade itself.
fn upgrade(bundle: &Path, f: UpgradeFlags, c: ClusterFlags, ui: Ui) -> Result<ExitStatus> {
    let root = f.site.root.as_path();
    let keys = trust::trusted_keys(&f.site.pubkey, root)?;
    let host = RootedHost::new(root.to_path_buf(), root == Path::new("/"))?;
    let answers = f.site.answers.as_deref();
    let mut opts = upgrade::UpgradeOptions {
        answers: answers.map(airlock_installer::site::answers::Answers::load).transpose()?,
        dry_run: true,
        allow_policy_override: f.allow_policy_override,
        rollback: f.rollback,
        restore_datastore: f.restore_datastore,
        keep: f.keep,
        wait: WaitOptions { timeout: Duration::from_secs(f.timeout), ..WaitOptions::default() },
        preflight_overrides: f.overrides.clone(),
        resume_command: upgrade::resume_command(
            bundle,
            &f.site.pubkey,
            answers,
            root,
            f.allow_policy_override,
            &f.overrides,
        ),
        answers_file: match answers {
            // The site's kept file gets its secrets back, so they are kept again as they are.
            Some(p) => Some((airlock_installer::site::answers::kept::read_answers_file(p)?, p.display().to_string())),
            None => None,
        },
    };
    let run = |opts: &upgrade::UpgradeOptions| {
        let progress = ui.progress();
        let r = upgrade::run(bundle, &keys, &host, opts, &SystemClock, &progress);
        progress.finish();
        r
    };
    // The site's other nodes (`nodes:` of the given or kept answers) are upgraded from
    // here too; `--rollback` and `--dry-run` stay on this node.
    let nodes = match &opts.answers {
        Some(a) => a.nodes.clone(),
        None => airlock_installer::site::answers::kept::load_kept(&host)?.map(|a| a.nodes).unwrap_or_default(),
    };
    // `--override NODE:CHECK`: this node's preflight gets only what applies to it.
    let here = nodes.first().map(|n| n.name.clone()).unwrap_or_default();
    opts.preflight_overrides = ops::cluster::overrides_for(&f.overrides, &nodes, &here)?;
    let clustered = nodes.len() > 1 && !f.rollback;
    if clustered && f.dry_run {
        eprintln!(
            "note: --dry-run plans this node only: the other {} nodes of `nodes` are not contacted (docs/cluster.md)",
            nodes.len() - 1
        );
    }
    let ask_first = !f.yes && !f.dry_run && !f.rollback;
    if f.dry_run || ask_first {
        let shown = match run(&opts) {
            Ok(r) => r,
            Err(e) => return Ok(upgrade_failed(e, ui.output)),
        };
        if !ui.json() || f.dry_run {
            render::print_upgrade(root, &shown, ui.output);
        }
        if f.dry_run || !shown.outcome.needs_confirming() {
            return Ok(ExitStatus::Success);
        }
        if !confirm("upgrade", "the plan", "Upgrade?")? {
            return Ok(ExitStatus::Input);
        }
    }
    opts.dry_run = false;
    cli::term::say_resume_on_interrupt("upgrade");
    if clustered {
        let site = ClusterUpgrade { bundle, flags: &f, cluster: &c, keys: &keys, host: &host, nodes };
        return cluster_upgrade(site, &opts, ui);
    }
    match run(&opts) {
        Ok(r) => {
            render::print_upgrade(root, &r, ui.output);
            Ok(ExitStatus::Success)
        }
        Err(e) => Ok(upgrade_failed(e, ui.output)),
    }
}

/// What `airlock upgrade` on the first server of a cluster works with.
struct ClusterUpgrade<'a> {
    bundle: &'a Path,
    flags: &'a UpgradeFlags,
    cluster: &'a ClusterFlags,
    keys: &'a [airlock_format::minisign::PublicKey],
    host: &'a RootedHost,
    nodes: Vec<airlock_installer::site::answers::SiteNode>,
}

/// The cluster's upgrade (docs/cluster.md): the bundle verified and the other nodes
/// prepared, this node upgraded, then the others; when one fails, every node on the new
/// release is put back, last upgraded first, this node last.
fn cluster_upgrade(s: ClusterUpgrade<'_>, opts: &upgrade::UpgradeOptions, ui: Ui) -> Result<ExitStatus> {
    use airlock_installer::ops::cluster::upgrade::{run_cluster_upgrade, ClusterUpgrade};
    use airlock_installer::ops::cluster::{verified_installer, ClusterRun, Purpose};
    let root = s.flags.site.root.as_path();
    // The cluster is held before the installer the nodes get is staged: a second run
    // from another terminal is refused before it writes anything. Declared before the
    // removal of that installer below, so it is given back only after it.
    let cluster_lock = airlock_installer::state::lock_cluster(s.host)?;
    let progress = ui.progress();
    let installer = verified_installer(s.host, &BundleFiles::locate(s.bundle)?, s.keys, &progress);
    progress.finish();
    let installer = installer?;
    // Whichever way this returns, the installer sent to the nodes leaves staging (a
    // crash leaves it to the next run, which empties staging first).
    struct Unstage<'a>(&'a RootedHost);
    impl Drop for Unstage<'_> {
        fn drop(&mut self) {
            let _ = airlock_installer::host::Host::remove_all(self.0, Path::new(ops::cluster::INSTALLER_STAGING));
        }
    }
    let _unstage = Unstage(s.host);
    let to_version = installer.manifest.version.clone();
    // The release the cluster comes from: this node's, or, when a run upgraded this
    // node already, the one that upgrade started from.
    let from_version = match upgrade::UpgradeJournal::load(s.host)? {
        Some(j) if j.to_version == to_version && j.outcome != airlock_installer::engine::Outcome::RolledBack => {
            j.from_version
        }
        _ => airlock_installer::state::ReleaseRecord::load(s.host)?.map(|r| r.version).unwrap_or_default(),
    };
    let ssh = SystemSsh {
        options: SshOptions {
            accept_new_host_keys: s.cluster.accept_new_host_keys,
            config_file: s.cluster.ssh_config.clone(),
            connect_timeout: 10,
        },
    };
    let run = ClusterRun {
        remote: &ssh,
        host: s.host,
        nodes: s.nodes,
        answers_text: String::new(),
        bundle: s.bundle.to_path_buf(),
        key_files: trust::trusted_key_files(&s.flags.site.pubkey, root)?,
        installer: installer.path.clone(),
        version: to_version.clone(),
        overrides: s.flags.overrides.clone(),
        accept_new_host_keys: s.cluster.accept_new_host_keys,
        purpose: Purpose::Upgrade { from_version: from_version.clone() },
        claimed: Default::default(),
    };
    let mut here = ClusterNodeHere { bundle: s.bundle, keys: s.keys, host: s.host, opts, root, ui };
    let outcome = run_cluster_upgrade(&run, &cluster_lock, &mut here)?;
    let rollback_code = outcome.rollback_exit_code();
    let status = match outcome {
        ClusterUpgrade::NotReady { prepared } => {
            ui.show(&serde_json::json!({ "cluster": prepared }), |_| render::print_cluster(&prepared));
            eprintln!(
                "error: {} not ready; nothing was upgraded on any node\nhint: fix what each node's hint says and run \
                 the upgrade again (what was sent already is not sent again)",
                failed_names(&prepared)
            );
            ExitStatus::Preflight
        }
        ClusterUpgrade::ThisNodeFailed(e) => {
            eprintln!("note: this node's upgrade failed, so no other node was upgraded");
            upgrade_failed(e, ui.output)
        }
        ClusterUpgrade::Upgraded { here, report, incoming_left } => {
            warn_not_removed(&incoming_left);
            match ui.output {
                Output::Json => print_json(&serde_json::json!({ "upgraded": here, "cluster": report })),
                Output::Text => render::print_cluster(&report),
            }
            ExitStatus::Success
        }
        ClusterUpgrade::RolledBack { failed_node, cause, all_back, report } => {
            ui.show(&serde_json::json!({ "ok": false, "cluster": report }), |_| render::print_cluster(&report));
            eprintln!(
                "error: node {failed_node}: the cluster's upgrade {from_version} → {to_version} failed: {cause}; {}\nhint: {}",
                if all_back {
                    format!("every node upgraded was put back on {from_version}, in reverse order")
                } else {
                    format!("putting {} back failed too", failed_names(&report))
                },
                if all_back {
                    "fix the cause on that node (its hint above), then run the upgrade again"
                } else {
                    "see each node's hint above; each node's upgrade journal (/var/lib/airlock/upgrade.json) names its \
                     backup"
                }
            );
            rollback_code.and_then(ExitStatus::from_code).unwrap_or(ExitStatus::RollbackFailed)
        }
    };
    Ok(status)
}

/// This node's part in the cluster's upgrade: the same upgrade as a single node's,
/// with its progress and report on the terminal.
struct ClusterNodeHere<'a> {
    bundle: &'a Path,
    keys: &'a [airlock_format::minisign::PublicKey],
    host: &'a RootedHost,
    opts: &'a upgrade::UpgradeOptions,
    root: &'a Path,
    ui: Ui,
}

impl ClusterNodeHere<'_> {
    fn run(
        &self,
        opts: &upgrade::UpgradeOptions,
    ) -> std::result::Result<upgrade::UpgradeReport, upgrade::UpgradeFailure> {
        let progress = self.ui.progress();
        let r = upgrade::run(self.bundle, self.keys, self.host, opts, &SystemClock, &progress);
        progress.finish();
        r
    }
}

impl ops::cluster::upgrade::ThisNode for ClusterNodeHere<'_> {
    type Upgraded = upgrade::UpgradeReport;
    type Failure = upgrade::UpgradeFailure;

    fn progress(&self) -> Box<dyn airlock_format::report::Reporter> {
        Box::new(self.ui.progress())
    }

    fn prepared(&mut self, report: &ops::cluster::ClusterReport) {
        if !self.ui.json() {
            render::print_cluster(report);
        }
    }

    fn upgrade(&mut self) -> std::result::Result<Self::Upgraded, Self::Failure> {
        let here = self.run(self.opts)?;
        if !self.ui.json() {
            render::print_upgrade(self.root, &here, self.ui.output);
        }
        Ok(here)
    }

    fn roll_back(&mut self) -> ops::cluster::NodeResult {
        let mut undo = self.opts.clone();
        undo.rollback = true;
        match self.run(&undo) {
            Ok(_) => ops::cluster::NodeResult::RolledBack,
            Err(e) => ops::cluster::NodeResult::RollbackFailed {
                cause: e.error.to_string(),
                hint: e.error.hint.clone().unwrap_or_default(),
            },
        }
    }
}

fn warn_not_removed(left: &[(String, String)]) {
    for (node, cause) in left {
        eprintln!("warning: node {node}: {} was not removed: {cause}", ops::cluster::INCOMING_DIR);
    }
}

fn failed_names(r: &ops::cluster::ClusterReport) -> String {
    r.nodes.iter().filter(|n| !n.result.ok()).map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn upgrade_failed(f: upgrade::UpgradeFailure, output: Output) -> ExitStatus {
    if output == Output::Json {
        print_json(&serde_json::json!({
            "ok": false,
            "exit_code": f.exit_code,
            "error": f.error.to_string(),
            "restore_datastore_command": f.restore_datastore_command,
        }));
    }
    eprintln!("error: {}", f.error);
    ExitStatus::from_code(f.exit_code).unwrap_or(ExitStatus::RollbackFailed)
}

fn uninstall(
    root: &Path,
    opts: ops::uninstall::UninstallOptions,
    yes: bool,
    dry_run: bool,
    ui: Ui,
) -> Result<ExitStatus> {
    let host = RootedHost::new(root.to_path_buf(), root == Path::new("/"))?;
    let inv = airlock_installer::state::Inventory::load(&host)?;
    let p = ops::uninstall::plan(&host, &inv, opts)?;
    match (ui.output, dry_run) {
        (Output::Json, true) => {
            print_json(&p);
            return Ok(ExitStatus::Success);
        }
        (Output::Text, _) => render::print_uninstall_plan(root, &p),
        (Output::Json, false) => {}
    }
    if dry_run {
        return Ok(ExitStatus::Success);
    }
    if !yes && !confirm("uninstall", "removing the install", "Remove it?")? {
        return Ok(ExitStatus::Input);
    }
    let r = ops::uninstall::apply(&host, &p)?;
    ui.show(&r, |r| render::print_uninstall_report(&inv.distribution, &inv.unit, root, r));
    Ok(ExitStatus::Success)
}

/// A cluster run over the site's kept `nodes` with the kept installer, for the
/// cluster-wide commands that come with no bundle.
fn site_run<'a>(host: &'a RootedHost, ssh: &'a SystemSsh, c: &ClusterFlags) -> Result<ops::cluster::ClusterRun<'a>> {
    let nodes = airlock_installer::site::answers::kept::load_kept(host)?.map(|a| a.nodes).unwrap_or_default();
    if nodes.len() < 2 {
        return Err(Error::input("--all-nodes", "the site's kept answers list no other nodes (`nodes:`)")
            .with_hint("run it on the first server of a cluster installed with `nodes:`; elsewhere leave it out"));
    }
    let installer = ops::cluster::all_nodes::kept_installer(host)?;
    let version = airlock_installer::state::ReleaseRecord::load(host)?.map(|r| r.version).unwrap_or_default();
    Ok(ops::cluster::ClusterRun {
        remote: ssh,
        host,
        nodes,
        answers_text: String::new(),
        bundle: PathBuf::new(),
        key_files: Vec::new(),
        installer,
        version,
        overrides: Vec::new(),
        accept_new_host_keys: c.accept_new_host_keys,
        purpose: ops::cluster::Purpose::Install,
        claimed: Default::default(),
    })
}

fn system_ssh(c: &ClusterFlags) -> SystemSsh {
    SystemSsh {
        options: SshOptions {
            accept_new_host_keys: c.accept_new_host_keys,
            config_file: c.ssh_config.clone(),
            connect_timeout: 10,
        },
    }
}

/// `airlock uninstall --all-nodes`: every other node of the site's `nodes` over ssh
/// (agents, then servers last joined first), then this node. A node that fails is
/// reported with its cause; the others, and this node, are still uninstalled.
fn uninstall_all_nodes(
    root: &Path,
    opts: ops::uninstall::UninstallOptions,
    yes: bool,
    c: &ClusterFlags,
    ui: Ui,
) -> Result<ExitStatus> {
    let host = RootedHost::new(root.to_path_buf(), root == Path::new("/"))?;
    let ssh = system_ssh(c);
    let run = site_run(&host, &ssh, c)?;
    let nodes = run.nodes.clone();
    let inv = airlock_installer::state::Inventory::load(&host)?;
    let p = ops::uninstall::plan(&host, &inv, opts)?;
    if !ui.json() {
        render::print_uninstall_plan(root, &p);
        say!(
            "and the other {} nodes: {}",
            nodes.len() - 1,
            nodes[1..].iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if !yes && !confirm("uninstall", "removing the install on every node", "Remove it on every node?")? {
        return Ok(ExitStatus::Input);
    }
    let outcome =
        run.uninstall_all_nodes(opts.purge, opts.force, Box::new(ui.progress()), || ops::uninstall::apply(&host, &p))?;
    match outcome {
        ops::cluster::all_nodes::AllNodesUninstalled::Done { here, report } => {
            match ui.output {
                Output::Json => print_json(&serde_json::json!({ "uninstalled": here, "cluster": report })),
                Output::Text => {
                    render::print_uninstall_report(&inv.distribution, &inv.unit, root, &here);
                    render::print_cluster(&report);
                }
            }
            Ok(ExitStatus::Success)
        }
        ops::cluster::all_nodes::AllNodesUninstalled::ThisNodeKept { failed, report } => {
            ui.show(&serde_json::json!({ "cluster": report }), |_| render::print_cluster(&report));
            eprintln!(
                "error: {} not uninstalled; the other nodes were, this one was kept\nhint: fix what each node's hint \
                 says, then run `airlock uninstall --all-nodes` again: it finishes the rest",
                failed.join(", ")
            );
            Ok(ExitStatus::NeedsAttention)
        }
    }
}

/// `airlock registry push`: credentials and TLS from flags, environment and docker
/// config, then the library's push; the report lists what was sent.
fn push(a: PushArgs, ui: Ui) -> Result<ExitStatus> {
    use airlock_installer::ops::push::{self, PushOptions};
    use airlock_registry::{ClientOptions, Credentials, RegistryTls};
    let keys = trust::trusted_keys(&a.pubkey, Path::new("/"))?;
    let files = BundleFiles::locate(&a.bundle)?;
    let (host, _) = push::parse_destination(&a.to)?;
    let mut client = ClientOptions::new(concat!("airlock/", env!("CARGO_PKG_VERSION")));
    client.concurrency = a.jobs.max(1);
    client.retries = a.retries;
    client.limit_rate = a.limit_rate;
    client
        .registries
        .insert(host.clone(), RegistryTls { ca: a.ca_file.clone(), insecure: false, plain_http: a.plain_http });
    let mut creds = Credentials::default();
    // The environment first: `insert` wins over anything a file adds later.
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("AIRLOCK_REGISTRY_USERNAME"), var("AIRLOCK_REGISTRY_PASSWORD")) {
        (Some(u), Some(p)) => creds.insert(&host, u, p),
        (None, None) => {}
        _ => {
            return Err(Error::input(
                "AIRLOCK_REGISTRY_USERNAME",
                "is set without AIRLOCK_REGISTRY_PASSWORD, or the other way round",
            )
            .with_hint("set both, or neither"))
        }
    }
    let files_to_read = match &a.auth_file {
        Some(f) => vec![f.clone()],
        None => Credentials::default_docker_configs(),
    };
    for f in &files_to_read {
        creds.add_docker_config(f)?;
    }
    client.credentials = creds;
    let opts = PushOptions {
        to: a.to.clone(),
        client,
        chunk_size: a.chunk_size,
        dry_run: a.dry_run,
        state_dir: push::default_state_dir(),
        stop: Some(cli::term::stop_at_chunk_boundary_on_interrupt()),
    };
    let progress = ui.progress();
    let report = push::run(&files, &keys, &opts, &progress);
    progress.finish();
    if let (Err(e), Some(stop)) = (&report, opts.stop) {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            // As every interrupted command: exit 130.
            eprintln!("error: {e}");
            std::process::exit(130);
        }
    }
    let report = report?;
    ui.show(&report, render::print_push);
    Ok(ExitStatus::Success)
}

fn serve(a: ServeArgs, ui: Ui) -> Result<ExitStatus> {
    use airlock_installer::ops::serve::{self, Store};
    let tls = match (&a.tls_cert, &a.tls_key, a.plain_http) {
        (Some(cert), Some(key), _) => Some(serve::tls_config(cert, key)?),
        (_, _, true) => None,
        _ => {
            return Err(Error::input("registry serve", "needs --tls-cert and --tls-key, or --plain-http")
                .with_hint("serve with the certificate the site PKI issued for this host (--tls-cert, --tls-key)"))
        }
    };
    let keys = trust::trusted_keys(&a.pubkey, Path::new("/"))?;
    let files = BundleFiles::locate(&a.bundle)?;
    let progress = ui.progress();
    let store = Store::open(&files, &keys, &progress);
    progress.finish();
    let store = store?;
    let listener = std::net::TcpListener::bind(a.listen).map_err(|e| {
        Error::input(format!("--listen {}", a.listen), format!("cannot listen there: {e}"))
            .with_hint("choose a free port, or an address of this host")
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The listing goes to stderr: stdout stays free, and the server runs until stopped.
    eprintln!(
        "serving {} images of {} on {scheme}://{} (read-only; Ctrl-C stops):",
        store.images.len(),
        a.bundle.display(),
        a.listen
    );
    for i in &store.images {
        eprintln!("  {}/{}", a.listen, i.served_as);
    }
    serve::serve(std::sync::Arc::new(store), listener, tls)?;
    Ok(ExitStatus::Success)
}

fn pki(command: PkiCommand, ui: Ui) -> Result<ExitStatus> {
    use airlock_installer::site::pki::{self, RenewOptions};
    let host = |root: &Path| RootedHost::new(root.to_path_buf(), false);
    match command {
        PkiCommand::Status { root, within } => {
            let r = pki::status(&host(&root)?, within)?;
            ui.show(&r, |r| render::print_pki_status(&root, r));
            render::print_pki_problems(&r);
            Ok(if r.expired > 0 { ExitStatus::Expired } else { ExitStatus::Success })
        }
        PkiCommand::Renew { root, within, dry_run } => {
            let r = pki::renew(&host(&root)?, RenewOptions { within_days: within, dry_run })?;
            ui.show(&r, |r| render::print_pki_renew(r, within, dry_run));
            Ok(ExitStatus::Success)
        }
    }
}
