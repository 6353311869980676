//! The whole `airlock install` / `airlock join` as a library, in two halves so the
//! plan is shown before anything changes: [`plan_install`] trusts, reads or asks the
//! answers, verifies the bundle into staging, plans and runs preflight — changing
//! nothing outside staging; [`apply_install`] applies the plan under the lock, keeps the
//! release whole for upgrades and, on the running system, brings the platform up and
//! checks its endpoints. The binary prints what each half returns and asks for the
//! confirmation in between; nothing here prints.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::report::Reporter;
use serde::Serialize;

use super::{plan, stage, Prepared};
use crate::bundle::profiles::staged_profiles;
use crate::bundle::trust;
use crate::engine::{apply_locked, ApplyOptions, ApplyReport, PlanReport};
use crate::host::{Host, HostLock, RootedHost};
use crate::live::{bring_up, post_install_checks, Clock, HttpsResult, LiveReport, WaitOptions};
use crate::render::platform::wiring;
use crate::site::answers::kept::InstallAnswers;
use crate::site::answers::{self, Answered, Answers, BundleFacts, Facts, HostFacts, Prompter};
use crate::site::preflight::site::{self, SiteInput};
use crate::site::preflight::PreflightReport;
use crate::state;

/// What `airlock install` (or `join`) was asked to do.
#[derive(Clone, Debug, Default)]
pub struct InstallOptions {
    pub bundle: PathBuf,
    /// `--pubkey`: vendor keys to trust besides the site's.
    pub pubkey: Vec<PathBuf>,
    /// `--answers`; `None`: the wizard asks through the prompter.
    pub answers: Option<PathBuf>,
    /// `--root` (`/` is the running system: live mode).
    pub root: PathBuf,
    /// `--override CHECK`, in the order given.
    pub overrides: Vec<String>,
    /// Live mode: how long to wait for the node, the charts and the endpoints.
    pub timeout: Duration,
    /// `airlock join`, with these overrides of the answers' `join` section.
    pub join: Option<JoinOverrides>,
    /// The host's name, offered as the node name by the wizard.
    pub hostname: Option<String>,
    /// `--dry-run`/`--check`: plan only. Nothing is written under the root (no lock,
    /// staging in a temporary directory outside it) and a missing root is not made.
    pub dry_run: bool,
}

/// `airlock join --server/--token-file`.
#[derive(Clone, Debug, Default)]
pub struct JoinOverrides {
    pub server: Option<String>,
    pub token_file: Option<PathBuf>,
}

impl InstallOptions {
    /// Live mode: the target root is the running system.
    pub fn live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The command that resumes this run, for the hint of a failure. The keys given are
    /// part of it: without them a site with no key directory could not verify again.
    pub fn resume_command(&self, answers: &Answers) -> String {
        let verb = if self.join.is_some() { "join" } else { "install" };
        let mut resume = format!("airlock {verb} {}", self.bundle.display());
        for k in &self.pubkey {
            resume.push_str(&format!(" --pubkey {}", k.display()));
        }
        if let Some(a) = &self.answers {
            resume.push_str(&format!(" --answers {}", a.display()));
        }
        if !self.live() {
            resume.push_str(&format!(" --root {}", self.root.display()));
        }
        for o in &self.overrides {
            resume.push_str(&format!(" --override {o}"));
        }
        if let (Some(flags), Some(j)) = (&self.join, &answers.join) {
            if flags.server.is_some() {
                resume.push_str(&format!(" --server {}", j.server));
            }
            if flags.token_file.is_some() {
                resume.push_str(&format!(" --token-file {}", j.token_file.display()));
            }
        }
        if self.answers.is_some() {
            resume.push_str(" --yes");
        }
        resume
    }
}

/// An install verified, staged, planned and checked: what [`apply_install`] applies, and
/// what the binary shows before asking.
pub struct Ready {
    host: RootedHost,
    /// The site's lock, taken before staging and held until the install ends; `None`
    /// for a dry run.
    lock: Option<HostLock>,
    pub answers: Answers,
    /// What the wizard was told (no answers file): kept for later upgrades.
    wizard_answers: Option<Answered>,
    pub prepared: Prepared,
    pub preflight: PreflightReport,
    /// Each step's state on the target now.
    pub plan: PlanReport,
    /// Warnings about the site's PKI (a customer certificate close to expiry...).
    pub warnings: Vec<String>,
}

impl Ready {
    /// The target as the operator names it in the confirmation.
    pub fn target(&self) -> String {
        if self.host.live() {
            "this system (live: the services start)".to_string()
        } else {
            self.host.root().display().to_string()
        }
    }
}

/// What an applied install did.
#[derive(Debug, Serialize)]
/// (Fields in the order of the JSON `airlock install --output json` has always printed.)
pub struct Installed {
    /// Live only: the endpoints checked against the site CA.
    pub checks: Option<Vec<HttpsResult>>,
    /// On the node that started the cluster: where the join token is and how another
    /// node gets it.
    pub join_token: Option<JoinTokenReport>,
    /// Live only: the node and charts coming up.
    pub live: Option<LiveReport>,
    pub preflight: PreflightReport,
    pub report: Option<wiring::InstallReport>,
    pub result: ApplyReport,
    #[serde(skip)]
    pub bundle: String,
    #[serde(skip)]
    pub version: String,
    #[serde(skip)]
    pub root: PathBuf,
    #[serde(skip)]
    pub node: String,
    #[serde(skip)]
    pub unit: String,
    /// The site CA's SHA-256 fingerprint, when the install made or took a PKI.
    #[serde(skip)]
    pub ca_fingerprint: Option<String>,
}

/// Where the node that started the cluster keeps the join token, and the exact commands
/// that hand it to a node that joins: every node keeps it at
/// [`state::CLUSTER_TOKEN_PATH`], the joining one once `airlock join` has read it.
#[derive(Debug, Serialize)]
pub struct JoinTokenReport {
    /// The token file as this run sees it (under the target root).
    pub path: PathBuf,
    /// Run here: copies the token to a node that joins (`<node>`).
    pub copy_command: String,
    /// Run on that node: joins it with the copied token.
    pub join_command: String,
}

/// Where [`JoinTokenReport::copy_command`] puts the token on the joining node: root's
/// home, which only root reads (the node's own state directory may not exist yet).
pub const JOIN_TOKEN_COPY: &str = "/root/cluster-token";

impl JoinTokenReport {
    fn new(opts: &InstallOptions, answers: &Answers) -> Self {
        let path = opts.root.join(Path::new(state::CLUSTER_TOKEN_PATH).strip_prefix("/").expect("absolute"));
        let keys = if opts.pubkey.is_empty() {
            " --pubkey <vendor.pub>".to_string()
        } else {
            opts.pubkey.iter().map(|k| format!(" --pubkey {}", k.display())).collect()
        };
        Self {
            copy_command: format!("scp {} <node>:{JOIN_TOKEN_COPY}", path.display()),
            join_command: format!(
                "airlock join {}{keys} --answers <node answers> --server {} --token-file {JOIN_TOKEN_COPY}",
                opts.bundle.display(),
                answers.node.ip
            ),
            path,
        }
    }
}

/// Trust, answers (file, or the wizard through `prompter`), staging, plan and
/// preflight. Changes nothing outside staging.
pub fn plan_install(opts: &InstallOptions, prompter: &mut dyn Prompter, reporter: &dyn Reporter) -> Result<Ready> {
    let root = opts.root.as_path();
    let keys = trust::trusted_keys(&opts.pubkey, root)?;
    let bundle_facts = signed_bundle_facts(&opts.bundle, &keys, root)?;
    let answers = match (&opts.answers, &opts.join) {
        (Some(path), Some(j)) => {
            Some(Answers::load_for_join(path, j.server.as_deref(), j.token_file.as_deref(), Some(&bundle_facts))?)
        }
        (Some(path), None) => Some(Answers::load_for_bundle(path, &bundle_facts)?),
        (None, _) => None,
    };
    // A real run makes a missing target root (as `rpm --root` and pacstrap do); a dry
    // run writes nothing, so it only says that the run would.
    let host = if opts.dry_run {
        RootedHost::new(root.to_path_buf(), opts.live())?
    } else {
        RootedHost::create(root.to_path_buf(), opts.live())?
    };
    // The site's lock before anything is written, staging included, held until the
    // install ends; a dry run takes none, since it writes nothing under the root.
    let lock = if opts.dry_run { None } else { Some(state::lock_site(&host)?) };
    let staged = stage(&opts.bundle, &keys, &host, opts.dry_run, reporter)
        .map_err(|e| trust::explain_untrusted_signer(e, root))?;
    let (answers, wizard_answers) = match answers {
        Some(a) => (a, None),
        None => {
            let profiles = staged_profiles(&staged)?;
            let facts = Facts {
                host: HostFacts { hostname: opts.hostname.clone(), primary_ip: None },
                bundle: Some(bundle_facts.with_profiles(&profiles)),
                profiles,
            };
            prompter.note("Answer the questions for this node (Enter takes the value in brackets).");
            // The LDAP answers are tested live and the customer's PKI files checked as
            // soon as they are given (asked again on failure).
            let (answers, answered) = answers::ask_checked(
                answers::questions(),
                &facts,
                prompter,
                &[crate::site::ldap::live_check(), crate::site::pki::wizard::live_check()],
            )?;
            (answers, Some(answered))
        }
    };
    if opts.join.is_some() && answers.join.is_none() {
        return Err(Error::input(
            format!("{}: join", answers.origin),
            "these answers are for the node that starts the cluster",
        )
        .with_hint(
            "install that node with `airlock install`; `airlock join` is for the other servers and the agents",
        ));
    }
    let prepared = plan(&opts.bundle, staged, &answers, &host)?;
    let image_bytes = site::image_bytes(&prepared.staged.manifest);
    let input = SiteInput::from_answers(&prepared.profile, &answers, image_bytes, &opts.overrides);
    let preflight = site::check(root, &input)?;
    let warnings = prepared.pki.iter().flat_map(|p| p.warnings()).collect();
    let plan = prepared.plan.check(&host)?;
    Ok(Ready { host, lock, answers, wizard_answers, prepared, preflight, plan, warnings })
}

/// Applies what [`plan_install`] planned (the operator confirmed it, and preflight let it
/// proceed), keeps the release whole for upgrades and, live, waits for the platform.
pub fn apply_install(
    ready: Ready,
    opts: &InstallOptions,
    clock: &dyn Clock,
    reporter: &dyn Reporter,
) -> Result<Installed> {
    let Ready { host, lock, answers, wizard_answers, prepared, preflight, .. } = ready;
    let Some(lock) = lock else {
        return Err(Error::input("install", "a dry run's plan was given to apply")
            .with_hint("this is a bug in airlock: a dry run only plans"));
    };
    let apply_opts = ApplyOptions {
        state_dir: PathBuf::from(state::STATE_DIR),
        resume_command: opts.resume_command(&answers),
        overrides: preflight.applied_overrides().cloned().collect(),
    };
    let result = apply_locked(&prepared.plan, &host, &apply_opts, &lock, &mut |_| {})?;
    // The release is kept whole (bundle, snapshot, answers without secrets) for
    // `airlock upgrade` and its rollback.
    let answers_text = match &opts.answers {
        Some(p) => Some((std::fs::read_to_string(p).at(p)?, p.display().to_string())),
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
    let kept = crate::ops::upgrade::keep_install(
        &host,
        &prepared.staged.dir,
        &prepared.staged.manifest,
        given,
        crate::ops::upgrade::DEFAULT_KEEP,
    );
    if let Err(e) = kept {
        // Every step is applied, but without the kept release no upgrade or rollback
        // can start from here: the journal and `airlock status` must not say "done".
        let what = "keeping the release for upgrades";
        crate::engine::Journal::record_failure_after(&host, &apply_opts.state_dir, what, &e.to_string())?;
        return Err(e.within(format!(
            "{what} (every install step is applied; once this is fixed, the same command finishes it)"
        )));
    }
    let (live, checks) = if host.live() {
        let wait = WaitOptions { timeout: opts.timeout, ..WaitOptions::default() };
        let up = bring_up(&host, &prepared.live, wait, clock, reporter)?;
        let https = wiring::https_checks(&answers, &prepared.staged.manifest.charts);
        let node_ip: IpAddr = answers.node.ip;
        let checked = post_install_checks(&host, &https, Path::new(state::CA_CERT), node_ip, wait, clock, reporter)?;
        (Some(up), Some(checked))
    } else {
        (None, None)
    };
    let join_token = answers.starts_cluster().then(|| JoinTokenReport::new(opts, &answers));
    Ok(Installed {
        join_token,
        preflight,
        result,
        live,
        checks,
        report: prepared.report,
        bundle: prepared.staged.manifest.name.clone(),
        version: prepared.staged.manifest.version.clone(),
        root: opts.root.clone(),
        node: prepared.live.node.clone(),
        unit: prepared.live.unit.clone(),
        ca_fingerprint: prepared.pki.as_ref().map(|p| p.ca_fingerprint()),
    })
}

/// What the bundle carries that decides which answers are required (`ldap` with
/// Keycloak), from its manifest alone: the signature is checked, which is cheap, so a
/// file lacking an answer is refused before the whole bundle is verified into staging.
fn signed_bundle_facts(bundle: &Path, keys: &[PublicKey], root: &Path) -> Result<BundleFacts> {
    let files = BundleFiles::locate(bundle)?;
    let (manifest, _, _) = airlock_format::read::read_manifest(&files, Some(keys))
        .map_err(|e| trust::explain_untrusted_signer(e, root))?;
    Ok(BundleFacts::from_manifest(&manifest))
}
