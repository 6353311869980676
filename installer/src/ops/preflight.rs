//! `airlock preflight`: whether this host (or target root) can take the platform of a
//! bundle, before anything is installed. The bundle is verified for its profiles (a
//! delta's come from the release installed under the root); the checks themselves are
//! `site::preflight`'s.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use airlock_format::parts::BundleFiles;
use airlock_format::report::Reporter;

use crate::bundle::delta::read_profiles_for_site;
use crate::bundle::trust;
use crate::site::answers::{Answers, Role, DEFAULT_DATA_DIR};
use crate::site::preflight::site::{self, SiteInput};
use crate::site::preflight::{CheckResult, Mode, Overall, PreflightReport, Status};

/// What `airlock preflight` was asked.
#[derive(Clone, Debug, Default)]
pub struct PreflightOptions {
    pub bundle: PathBuf,
    pub pubkey: Vec<PathBuf>,
    /// The site's answers (profile, role, data directory, join, overrides); without
    /// them and without `profile`, the answers the site kept, if any.
    pub answers: Option<PathBuf>,
    /// Without answers: the bundle profile to check against, as a first server.
    pub profile: Option<String>,
    /// What the run is for; default: install, or join when the answers join.
    pub mode: Option<Mode>,
    pub root: PathBuf,
    pub overrides: Vec<String>,
}

/// Runs every check for the chosen profile and mode.
pub fn run(opts: &PreflightOptions, reporter: &dyn Reporter) -> Result<PreflightReport> {
    let root: &Path = &opts.root;
    let answers = match (&opts.answers, &opts.profile) {
        (Some(path), _) => Some(Answers::load(path)?),
        // As every command that needs the answers: the site's kept ones when none are
        // given, so a check before a re-run or an upgrade checks what will be installed.
        (None, None) => {
            let host = crate::host::RootedHost::new(root.to_path_buf(), root == Path::new("/"))?;
            crate::site::answers::kept::load_kept(&host)?
        }
        (None, Some(_)) => None,
    };
    let keys = trust::trusted_keys(&opts.pubkey, root)?;
    let files = BundleFiles::locate(&opts.bundle)?;
    let (manifest, profiles) = read_profiles_for_site(&files, &keys, root, reporter)?;
    let names = || profiles.iter().map(|p| p.name.as_str()).collect::<Vec<&str>>().join(", ");
    let wanted = match (&answers, &opts.profile) {
        (Some(a), _) => a.profile.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) if profiles.len() == 1 => profiles[0].name.clone(),
        (None, None) => {
            return Err(Error::input("--profile", "the bundle has several profiles and none was chosen")
                .with_hint(format!("pass --answers FILE or --profile NAME ({})", names())));
        }
    };
    let prof = profiles.iter().find(|p| p.name == wanted).ok_or_else(|| {
        Error::input("profile", format!("the bundle has no profile `{wanted}`"))
            .with_hint(format!("profiles in this bundle: {}", names()))
    })?;
    let image_bytes = site::image_bytes(&manifest);
    let mut input = match &answers {
        Some(a) => SiteInput::from_answers(prof, a, image_bytes, &opts.overrides),
        None => SiteInput {
            profile: prof,
            role: Role::Server,
            mode: Mode::Install,
            image_bytes,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            join_token_file: None,
            overrides: opts.overrides.clone(),
        },
    };
    if let Some(m) = opts.mode {
        input.mode = m;
    }
    let mut report = site::check(root, &input)?;
    report.profile = Some(prof.name.clone());
    if let Some(a) = &answers {
        add_database_check(&mut report, a, true);
    }
    Ok(report)
}

/// Adds the live database check to `report` when the answers name an external
/// database: `airlock preflight` (on the node it runs on) and the install on a live
/// host log in; an install into a target root cannot reach the site's database from
/// here, and says so (`airlock preflight` on the node checks it).
pub fn add_database_check(report: &mut PreflightReport, answers: &Answers, live: bool) {
    let Some(db) = answers.keycloak_database.as_ref() else { return };
    let check = if live {
        database_check(db)
    } else {
        CheckResult {
            id: DATABASE_CHECK.to_string(),
            title: "Keycloak's external database accepts the answers' login".to_string(),
            status: Status::Skipped,
            detail: "a target root is not the site: its database is not reached from here".to_string(),
            hint: Some("run `airlock preflight BUNDLE --answers FILE` on the node to log in to it".to_string()),
            note: None,
        }
    };
    if check.status == Status::Fail {
        report.overall = Overall::Fail;
    }
    report.checks.push(check);
}

/// The id of the live check of Keycloak's external database.
pub const DATABASE_CHECK: &str = "keycloak-database";

/// A real login to the database the answers name, as Keycloak will make it
/// (`site::database`). A failure blocks the install: Keycloak would not start.
fn database_check(db: &crate::site::answers::keycloak_db::KeycloakDatabaseAnswers) -> CheckResult {
    let (status, detail, hint) = match crate::site::database::probe(db, crate::site::database::TIMEOUT) {
        Ok(r) => (Status::Pass, r.summary, None),
        Err(e) => (Status::Fail, format!("{}: {} ({})", e.subject, e.cause, e.key), Some(e.hint)),
    };
    CheckResult {
        id: DATABASE_CHECK.to_string(),
        title: "Keycloak's external database accepts the answers' login".to_string(),
        status,
        detail,
        hint,
        note: None,
    }
}
