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

use airlock_format::error::{Error, Result};
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::report::Reporter;
use serde::Serialize;

use super::{plan, stage, Prepared};
use crate::bundle::profiles::staged_profiles;
use crate::bundle::trust;
use crate::engine::{apply_locked, ApplyOptions, ApplyReport, CheckStatus, OverrideRecord, PlanReport};
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
    /// Without `answers`, on a site that keeps an earlier install's answers: take them
    /// as they are, or let the wizard ask with each of them pre-filled.
    pub kept: KeptUse,
}

/// What an install without `--answers` does with the site's kept answers
/// (`/var/lib/airlock/answers.yaml` and their 0600 secrets), when there are any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeptUse {
    /// Install (check, resume) with them as they are: nothing is asked.
    #[default]
    Take,
    /// The wizard asks, every question pre-filled from them (Enter keeps each).
    Prefill,
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
    /// The site's kept answers, when the install took them (no answers file, no wizard).
    kept: Option<answers::kept::KeptText>,
    pub prepared: Prepared,
    pub preflight: PreflightReport,
    /// Each step's state on the target now.
    pub plan: PlanReport,
    /// Warnings about the site's PKI (a customer certificate close to expiry...) and
    /// about live checks skipped in the wizard.
    pub warnings: Vec<String>,
    /// The wizard's skipped live checks, as journaled with the preflight overrides.
    pub skipped_checks: Vec<OverrideRecord>,
}

impl Ready {
    /// What the wizard was told, when it asked (no answers file): the binary shows it,
    /// secrets masked ([`Answered::to_yaml`]), before asking to apply the plan.
    pub fn wizard_answers(&self) -> Option<&Answered> {
        self.wizard_answers.as_ref()
    }

    /// Where the answers came from when the install took the site's kept ones.
    pub fn kept_answers_origin(&self) -> Option<&str> {
        self.kept.as_ref().map(|k| k.origin.as_str())
    }

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
        let path = crate::host::shown_path(&opts.root, Path::new(state::CLUSTER_TOKEN_PATH));
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
    // No answers file: the site's kept answers, if an earlier install kept them (read
    // under the site's lock when the run takes one).
    let kept = match &opts.answers {
        None => answers::kept::kept_text(&host)?,
        _ => None,
    };
    let (answers, kept, prefill) = match (answers, kept, opts.kept) {
        (Some(a), _, _) => (Some(a), None, None),
        (None, Some(k), KeptUse::Take) => {
            let a = match &opts.join {
                Some(j) => Answers::from_yaml_for_join(
                    &k.text,
                    &k.origin,
                    j.server.as_deref(),
                    j.token_file.as_deref(),
                    Some(&bundle_facts),
                )?,
                None => Answers::from_yaml_for(&k.text, &k.origin, Some(&bundle_facts))?,
            };
            (Some(a), Some(k), None)
        }
        (None, Some(k), KeptUse::Prefill) => (None, None, answers::kept::answered(&k.text)),
        (None, None, _) => (None, None, None),
    };
    let staged = stage(&opts.bundle, &keys, &host, opts.dry_run, reporter)
        .map_err(|e| trust::explain_untrusted_signer(e, root))?;
    let (answers, wizard_answers) = match answers {
        Some(a) => (a, None),
        None => {
            let profiles = staged_profiles(&staged)?;
            let facts = Facts {
                host: host_facts(opts, crate::site::preflight::live_network),
                bundle: Some(bundle_facts.with_profiles(&profiles)),
                profiles,
            };
            prompter.note("Answer the questions for this node (Enter takes the value in brackets).");
            // The LDAP and Keycloak database answers are tested live and the customer's
            // PKI files checked as soon as they are given (asked again on failure).
            let (answers, answered) = answers::wizard::ask_prefilled(
                answers::questions(),
                &facts,
                prompter,
                &[
                    crate::site::ldap::live_check(),
                    crate::site::database::live_check(),
                    crate::site::pki::wizard::live_check(),
                ],
                prefill.as_ref(),
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
    // `--override NODE:CHECK` applies to that node of `nodes` only (docs/cluster.md).
    let overrides = crate::ops::cluster::overrides_for(&opts.overrides, &answers.nodes, &answers.node.name)?;
    let input = SiteInput::from_answers(&prepared.profile, &answers, image_bytes, &overrides);
    let mut preflight = site::check(root, &input)?;
    crate::ops::preflight::add_database_check(&mut preflight, &answers, opts.live());
    let mut warnings: Vec<String> = prepared.pki.iter().flat_map(|p| p.warnings()).collect();
    if let Some(path) = &opts.answers {
        warnings.extend(answers::exposure_warning(path, &answers));
    }
    let skipped_checks = retest_skipped(&answers, opts.live(), &mut warnings);
    let plan = prepared.plan.check(&host)?;
    Ok(Ready { host, lock, answers, wizard_answers, kept, prepared, preflight, plan, warnings, skipped_checks })
}

/// Applies what [`plan_install`] planned (the operator confirmed it, and preflight let it
/// proceed), keeps the release whole for upgrades and, live, waits for the platform.
pub fn apply_install(
    ready: Ready,
    opts: &InstallOptions,
    clock: &dyn Clock,
    reporter: &dyn Reporter,
) -> Result<Installed> {
    let Ready { host, lock, answers, wizard_answers, kept, prepared, preflight, skipped_checks, .. } = ready;
    let Some(lock) = lock else {
        return Err(Error::input("install", "a dry run's plan was given to apply")
            .with_hint("this is a bug in airlock: a dry run only plans"));
    };
    let apply_opts = ApplyOptions {
        state_dir: PathBuf::from(state::STATE_DIR),
        resume_command: opts.resume_command(&answers),
        overrides: preflight.applied_overrides().cloned().chain(skipped_checks).collect(),
    };
    let answers_text = match (&opts.answers, kept) {
        (Some(p), _) => Some((answers::kept::read_answers_file(p)?, p.display().to_string())),
        (None, Some(k)) => Some((k.text, k.origin)),
        (None, None) => None,
    };
    let given = || match (&answers_text, &wizard_answers) {
        (Some((text, origin)), _) => Ok(InstallAnswers::File { text, origin }),
        (None, Some(answered)) => Ok(InstallAnswers::Wizard(answered)),
        (None, None) => Err(Error::input("install", "the install has answers from neither a file nor the wizard")
            .with_hint("this is a bug in airlock; run the install again with --answers FILE")),
    };
    // What the wizard was told is kept before the first step, not only with the release
    // at the end: a run stopped midway is resumed by the same command (no --answers),
    // which takes the kept answers instead of asking everything again.
    if wizard_answers.is_some() {
        answers::kept::keep_install_answers(&host, given()?)?;
    }
    let result = apply_locked(&prepared.plan, &host, &apply_opts, &lock, &mut |_| {})?;
    // The release is kept whole (bundle, snapshot, answers without secrets) for
    // `airlock upgrade` and its rollback.
    let kept = crate::ops::upgrade::keep_install(
        &host,
        &prepared.staged.dir,
        &prepared.staged.manifest,
        given()?,
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

/// The journal's name for a skipped LDAP live check (among the preflight overrides).
pub const SKIPPED_LDAP_CHECK: &str = "ldap-live-check";

/// The wizard's live checks the operator skipped, tested again where that means
/// something: on the running system (`--root /`) the LDAP probe runs now, at install
/// time on site. A failure again is a warning, not a refusal (the operator knowingly
/// went on; Keycloak's logins wait for the directory, nothing else does). Under a root
/// this machine is not the node, so nothing is tested and the warning says how to test
/// from the node. Each becomes a record the journal keeps with the preflight overrides.
fn retest_skipped(answers: &Answers, live: bool, warnings: &mut Vec<String>) -> Vec<OverrideRecord> {
    let mut records = Vec::new();
    for skipped in answers.skipped_checks.iter().filter(|s| s.section == "ldap") {
        let Some(ldap) = &answers.ldap else { continue };
        let test_hint = "test it from the node with `airlock ldap test --answers FILE` (docs/answers.md)";
        let now = if live {
            match crate::site::ldap::probe(ldap) {
                Ok(report) => {
                    format!("tested at install time: passed ({})", report.summary().lines().next().unwrap_or(""))
                }
                Err(e) => {
                    warnings.push(format!(
                        "ldap: the live check skipped in the wizard fails at install time too: {}: {}; hint: {};                          Keycloak's logins need the directory, {test_hint}",
                        e.subject, e.cause, e.hint
                    ));
                    format!("tested at install time: failed: {}: {}", e.subject, e.cause)
                }
            }
        } else {
            warnings.push(format!(
                "ldap: the live check was skipped in the wizard and a target root cannot test it; {test_hint}"
            ));
            "not tested at install time: installing into a target root, not on the node".to_string()
        };
        records.push(OverrideRecord {
            id: SKIPPED_LDAP_CHECK.to_string(),
            applied: true,
            status_before: Some(CheckStatus::Fail),
            detail: format!("skipped by the operator in the wizard after: {}; {now}", skipped.problem),
        });
    }
    records
}

/// What the wizard offers from the host: its name, and for a live install (`--root /`)
/// its primary address as `node.ip`. Under a target root the machine running airlock is
/// not the node being installed, so nothing of its network is offered.
fn host_facts(opts: &InstallOptions, network: fn() -> crate::site::preflight::NetworkFacts) -> HostFacts {
    HostFacts { hostname: opts.hostname.clone(), primary_ip: if opts.live() { network().primary_ip() } else { None } }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::preflight::{DefaultRoute, InterfaceAddress, NetworkFacts};

    fn two_interfaces() -> NetworkFacts {
        let addr = |i: &str, a: &str| InterfaceAddress { interface: Some(i.into()), address: a.parse().unwrap() };
        NetworkFacts {
            ipv4_default_routes: vec![DefaultRoute {
                interface: "ens3".into(),
                gateway: Some("10.0.0.1".parse().unwrap()),
                metric: 100,
            }],
            ipv4_addresses: vec![addr("lo", "127.0.0.1"), addr("ens4", "192.168.7.2"), addr("ens3", "10.0.0.11")],
            ..NetworkFacts::default()
        }
    }

    #[test]
    fn a_live_install_offers_the_default_routes_address_and_a_target_root_offers_none() {
        let live = InstallOptions { root: "/".into(), hostname: Some("n1".into()), ..InstallOptions::default() };
        let facts = host_facts(&live, two_interfaces);
        assert_eq!(facts.primary_ip, Some("10.0.0.11".parse().unwrap()));
        assert_eq!(facts.hostname.as_deref(), Some("n1"));
        let rooted = InstallOptions { root: "/mnt/target".into(), ..InstallOptions::default() };
        assert_eq!(host_facts(&rooted, || panic!("the host's network is not asked under a root")).primary_ip, None);
    }

    #[test]
    fn without_a_default_route_only_a_single_address_is_offered() {
        let mut n = two_interfaces();
        n.ipv4_default_routes.clear();
        assert_eq!(n.primary_ip(), None, "two candidates: no guess");
        n.ipv4_addresses.retain(|a| a.interface.as_deref() != Some("ens4"));
        assert_eq!(n.primary_ip(), Some("10.0.0.11".parse().unwrap()));
    }
}
