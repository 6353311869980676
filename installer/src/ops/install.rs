//! `airlock install`: verify and stage the bundle, compute the whole plan, then apply
//! it through the engine — or print it (`--dry-run`, `--check`) through the same code.
//!
//! Order matters and is the point of this module: nothing on the target changes until
//! the bundle has been verified completely into staging, the image archive is written
//! there, the profile and answers agree, and every step of the plan exists. The
//! cluster token is created once and kept in the state directory, so a re-run after a
//! failure renders the same configs and converges instead of starting over.

mod flow;
pub mod hardening;
pub mod site_registry;

pub use flow::{
    apply_install, plan_install, InstallOptions, Installed, JoinOverrides, JoinTokenReport, KeptUse, Ready,
    SKIPPED_LDAP_CHECK,
};

use crate::state::{self, ReleaseRecord};
use std::fs;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::{DistributionKind, Manifest};
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::report::Reporter;
use ring::rand::SecureRandom;

use crate::bundle::images::{write_image_archive, Compression};
use crate::bundle::staging::{self, Staged};
use crate::engine::layout::{Layout, StepGroup};
use crate::engine::{layout_steps, Plan};
use crate::host::Host;
use crate::live::LiveTarget;
use crate::render::distribution::{self, Artifacts, ChartInput, DistributionInput, RegistryMirror, Token};
use crate::render::platform::wiring;
use crate::site::answers::{Address, Answers};
use crate::site::profile::{Options, Profile};
use crate::state::{Inventory, InventoryKey};

/// Staged image archive entry, written next to the verified bundle content.
pub const IMAGE_ARCHIVE_ENTRY: &str = "images/airlock-images.tar";

/// A verified, staged bundle and the plan that installs it.
pub struct Prepared {
    pub staged: Staged,
    pub profile: Profile,
    pub plan: Plan,
    /// What live mode starts and waits for once the plan is applied.
    pub live: LiveTarget,
    /// The site PKI, on the node that starts the cluster (its CA fingerprint and
    /// certificates are for the report and the platform's TLS Secrets).
    pub pki: Option<crate::site::pki::SitePki>,
    /// What to tell the customer once the plan is applied (on the node that starts
    /// the cluster); also written to `/var/lib/airlock/report.json`.
    pub report: Option<wiring::InstallReport>,
    /// What the plan places (also written to `installed.json` by it): what an upgrade
    /// compares with the installed release's to remove what the new one no longer has.
    pub inventory: Inventory,
}

/// Verifies the bundle into staging under the target root (a dry run: outside it, see
/// [`staging::staging_dir`]). Changes nothing on the target outside
/// `<root>/var/lib/airlock/staging`.
pub fn stage(
    bundle: &Path,
    trusted: &[PublicKey],
    host: &dyn Host,
    dry_run: bool,
    reporter: &dyn Reporter,
) -> Result<Staged> {
    let files = BundleFiles::locate(bundle)?;
    let (dir, scratch) = staging::staging_dir(host, Path::new(state::INSTALL_STAGING), dry_run)?;
    let mut staged = staging::extract_with_image_archive(&files, trusted, &dir, IMAGE_ARCHIVE_ENTRY, reporter)?;
    staged.scratch = scratch;
    Ok(staged)
}

/// Verifies the bundle into staging and plans the install.
pub fn prepare(
    bundle: &Path,
    trusted: &[PublicKey],
    answers: &Answers,
    host: &dyn Host,
    reporter: &dyn Reporter,
) -> Result<Prepared> {
    let staged = stage(bundle, trusted, host, false, reporter)?;
    plan(bundle, staged, answers, host)
}

/// The monitoring content the bundle carries (`manifest.monitoring`), read from
/// staging, where every entry was checked against the signed manifest.
fn load_monitoring_content(staged: &Staged) -> Result<Option<crate::render::platform::monitoring::Content>> {
    let Some(mc) = &staged.manifest.monitoring else { return Ok(None) };
    let read = |paths: &[String]| -> Result<Vec<(String, String)>> {
        paths
            .iter()
            .map(|p| {
                let file = staged.path(p);
                let text = fs::read_to_string(&file).at(&file)?;
                Ok((p.rsplit('/').next().unwrap_or(p).to_string(), text))
            })
            .collect()
    };
    Ok(Some(crate::render::platform::monitoring::Content {
        rules: read(&mc.rules)?,
        dashboards: read(&mc.dashboards)?,
    }))
}

/// Plans the install of a staged bundle with these answers.
pub fn plan(bundle: &Path, staged: Staged, answers: &Answers, host: &dyn Host) -> Result<Prepared> {
    let m = &staged.manifest;

    let profile_entry = m.profiles.iter().find(|p| p.name == answers.profile).ok_or_else(|| {
        let names: Vec<&str> = m.profiles.iter().map(|p| p.name.as_str()).collect();
        Error::input(format!("{}: profile", answers.origin), format!("the bundle has no profile `{}`", answers.profile))
            .with_hint(format!("profiles in this bundle: {}", names.join(", ")))
    })?;
    let text = fs::read_to_string(staged.path(&profile_entry.path)).at(staged.path(&profile_entry.path))?;
    let profile = Profile::from_bundle_entry(&text, &profile_entry.name)?;
    answers.validate_against(&profile)?;
    let components: Vec<String> = m.components.iter().map(|c| c.name.clone()).collect();
    profile.check_components(&components, &profile_entry.path)?;
    let dist = m.distribution.as_ref().ok_or_else(|| {
        Error::input(bundle.display().to_string(), "the bundle carries no Kubernetes distribution")
            .with_hint("install bundles built with a `distribution:` section in their spec")
    })?;
    if dist.kind != profile.distribution {
        return Err(Error::input(
            format!("profile {}", profile.name),
            format!("the profile installs {} but the bundle carries {}", profile.distribution, dist.kind),
        ));
    }

    // `stage` wrote the image archive while verifying; a bundle staged as plain files
    // (`staging::extract`) gets it written from its layout here.
    let out = staged.path(IMAGE_ARCHIVE_ENTRY);
    if !m.images.is_empty() && !out.is_file() {
        #[allow(clippy::disallowed_methods)] // inside the staging directory the host resolved
        fs::create_dir_all(out.parent().expect("entry has a parent")).at(&out)?;
        write_image_archive(&staged.path("oci"), &out, Compression::None, 0)?;
    }

    let token = cluster_token(host, answers)?;
    let mut input = distribution_input(&staged, &profile, answers, token.clone())?;
    if input.kind() == DistributionKind::Rke2 && usr_local_unfit(host)? {
        input.rke2_opt_prefix = Some(opt_prefix_texts(&staged)?);
    }
    // The site PKI, like the token, is loaded from the target when it is there and
    // made once otherwise; its steps go first so what later embeds it finds it on disk.
    let pki = if answers.starts_cluster() { Some(crate::site::pki::prepare(answers, host)?) } else { None };
    if let Some(p) = &pki {
        let d = &answers.cluster.ingress_domain;
        let monitored = m.charts.iter().any(|c| {
            profile.components.contains(&c.component)
                && [wiring::PROMETHEUS_CHART, wiring::GRAFANA_CHART].contains(&c.name.as_str())
        });
        if monitored {
            use crate::render::platform::monitoring::{alertmanager_host, grafana_host, prometheus_host};
            p.require_ingress_names(&[prometheus_host(d), alertmanager_host(d), grafana_host(d)], d)?;
        }
    }
    // The platform's credentials likewise: read back or generated, written before the
    // Secrets that carry them, so a resumed run renders the same Secrets.
    let mut platform = Layout::default();
    let mut report = None;
    let monitoring_content = load_monitoring_content(&staged)?;
    match &pki {
        Some(p) if input.role.is_server() => {
            let credentials = wiring::Credentials::load_or_generate(host)?;
            let site = wiring::Site {
                answers,
                pki: p,
                credentials: &credentials,
                distribution: dist.kind,
                keycloak: &profile.keycloak,
                monitoring: &profile.monitoring,
                monitoring_content: monitoring_content.as_ref(),
            };
            let manifests_dir = input.data_dir().join("server/manifests");
            let objects = wiring::wire_charts(&mut input.charts, &m.charts, &site, &manifests_dir)?;
            if input.charts.iter().any(|c| c.name == wiring::PROMETHEUS_RELEASE) {
                // node-exporter's textfile collector reads it (CertificateExpiresSoon);
                // it records the PKI, so it goes with the PKI.
                platform.extend(wiring::pki_textfile_layout(p).grouped(StepGroup::Secrets));
            }
            let r = wiring::InstallReport::new(answers, &m.charts, Some(p));
            if !r.urls.is_empty() {
                platform.extend(credentials.layout().grouped(StepGroup::Secrets));
            }
            platform.extend(objects.grouped(StepGroup::Charts));
            report = Some(r);
        }
        _ => {
            // The first server's manifests are the cluster's: a server joining a
            // running cluster writes no HelmChart at all. It has neither the PKI nor
            // the credentials, so its platform charts would carry empty values; and
            // K3s/RKE2 apply each server's manifest files whenever that server starts,
            // so a second copy of any chart is a second writer — a joining server
            // restarted with an older copy (its upgrade not run yet, or rolled back)
            // would put the older release back over the cluster's.
            input.charts.clear();
        }
    }
    let live = live_target(&input);
    // The token goes first: it must be on disk before any config that embeds it, or a
    // crash in between would make the resumed run generate another and rewrite them.
    let mut layout = Layout::default();
    layout.dir(Path::new(state::CLUSTER_TOKEN_PATH).parent().expect("token path has a parent"), 0o700);
    layout
        .in_group(StepGroup::Secrets, |l| l.secret_file(state::CLUSTER_TOKEN_PATH, token.expose().as_bytes().to_vec()));
    // The inventory's digests of secret-bearing files are keyed with the site's key:
    // kept, like the token, so a resumed run records the same digests.
    let key = InventoryKey::load_or_generate(host)?;
    layout.in_group(StepGroup::Secrets, |l| l.secret_file(state::INVENTORY_KEY_PATH, key.file_content()));
    // The key `airlock report` signs the site's readiness report with (docs/report.md):
    // made with the site, kept like the inventory key.
    let (report_key, report_pub) = crate::ops::report::key_files(host)?;
    layout.in_group(StepGroup::Secrets, |l| {
        l.secret_file(crate::ops::report::REPORT_KEY_PATH, report_key);
        l.file(crate::ops::report::REPORT_PUBKEY_PATH, 0o644, report_pub);
    });
    layout.extend(platform);
    let dist_layout = distribution::render(&input)?;
    let security = hardening::HostSecurity::read(host)?;
    let fitted = hardening::layout(security, host.live(), dist.kind, &dist_layout, &input.data_dir());
    layout.extend(dist_layout);
    layout.extend(fitted);

    let mut steps = pki.as_ref().map(crate::site::pki::SitePki::steps).unwrap_or_default();
    // With a site registry, the bundle's images go there before anything points the
    // node at it (registries.yaml) or restarts the distribution.
    if let Some(r) = answers.registry.as_ref().filter(|r| r.pushes()) {
        steps.push(Box::new(site_registry::PushImages::new(bundle, m, &staged.signer, r)));
    }
    let mut placed = layout.clone();
    if let Some(p) = &pki {
        placed.extend(p.layout());
    }
    let mut inventory = inventory(&placed, &staged, &input, &key);
    // The vendor key that verified this bundle, kept in the site key directory by the
    // key step below: the site's like the rest, so an uninstall takes it away too.
    if let Some((path, text)) = crate::bundle::keys::kept_signer_file(&staged, host)? {
        let key_dir = PathBuf::from(state::KEY_DIR);
        inventory.files.push(crate::state::inventory::InventoryFile {
            path,
            sha256: Some(airlock_format::digest::Sha256Digest::of(&text)),
            hmac_sha256: None,
        });
        if !inventory.dirs.contains(&key_dir) {
            inventory.dirs.push(key_dir);
        }
    }
    let release = release_record(&staged, &profile)?;
    layout.in_group(StepGroup::Records, |l| {
        l.file(state::INVENTORY_PATH, 0o644, inventory.to_json());
        if dist.kind == DistributionKind::K3s {
            // What k3s-uninstall.sh removes: the same record, in a form sh can read.
            l.file(state::UNINSTALL_LIST_PATH, 0o644, inventory.uninstall_list());
        }
        l.file(state::RELEASE_PATH, 0o644, release);
        if let Some(r) = &report {
            l.file(state::REPORT_PATH, 0o644, r.to_json());
        }
    });
    let kind = distribution::product_name(dist.kind).to_lowercase();
    steps.extend(layout_steps(&kind, &layout, &staged.dir));
    // Last: the site trusts a newly introduced key only once the install it came with is done.
    steps.extend(crate::bundle::keys::statement_steps(&staged, host)?);
    let plan = Plan::from_steps(steps)?;
    Ok(Prepared { staged, profile, plan, live, pki, report, inventory })
}

/// What `airlock uninstall` may remove: everything this layout places, each with its
/// digest (the signed manifest's for bundle entries, the verified staged file's for
/// what was unpacked from one, keyed with the site key for secret-bearing files), and
/// the trees the distribution fills.
fn inventory(layout: &Layout, staged: &Staged, input: &DistributionInput, key: &InventoryKey) -> Inventory {
    let (name, killall) = match input.kind() {
        DistributionKind::K3s => ("k3s", PathBuf::from("/usr/local/bin/k3s-killall.sh")),
        DistributionKind::Rke2 => {
            let prefix = if input.rke2_opt_prefix.is_some() { distribution::OPT_PREFIX } else { "/usr/local" };
            ("rke2", PathBuf::from(format!("{prefix}/bin/rke2-killall.sh")))
        }
    };
    let runtime =
        vec![input.data_dir(), PathBuf::from(format!("/etc/rancher/{name}")), PathBuf::from("/var/lib/kubelet")];
    let digest = |entry: &str| staged_digest(staged, entry);
    Inventory::of(layout, name, input.unit(), Some(killall), runtime, key, &digest)
}

/// The plain SHA-256 the inventory records for a staged entry (what `status` and the
/// uninstall script compare the placed file with). Bundle entries take the signed
/// manifest's digest and the image archive the one computed while it was written
/// during verification: neither is read again. Only a file unpacked from a verified
/// entry (RKE2's tarball) is hashed here.
pub fn staged_digest(staged: &Staged, entry: &str) -> Option<airlock_format::Sha256Digest> {
    if entry == IMAGE_ARCHIVE_ENTRY && staged.image_archive_sha256.is_some() {
        return staged.image_archive_sha256;
    }
    staged.manifest.entries.iter().find(|e| e.path == entry).map(|e| e.sha256).or_else(|| {
        let mut r = airlock_format::digest::HashingReader::new(fs::File::open(staged.path(entry)).ok()?);
        std::io::copy(&mut r, &mut std::io::sink()).ok()?;
        Some(r.finish().0)
    })
}

/// The unit to start and, on servers, the admin kubeconfig the distribution writes at
/// first start and the charts to wait for.
fn live_target(input: &DistributionInput) -> LiveTarget {
    let kind = input.kind();
    let rke2_data = input.data_dir().join("rke2");
    let kubectl = input
        .role
        .is_server()
        .then(|| crate::host::Kube::for_node(&kind.to_string(), input.unit(), Some(&rke2_data)))
        .flatten();
    let charts = if kubectl.is_some() { input.charts.iter().map(|c| c.name.clone()).collect() } else { Vec::new() };
    // RKE2's CIS profile checks the kernel settings at start: the file the plan wrote
    // is applied before the first start (a reboot would apply it too).
    let sysctl = input.cis.then(|| crate::live::SysctlApply {
        file: PathBuf::from(distribution::CIS_SYSCTL),
        expect: distribution::CIS_SYSCTLS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    });
    LiveTarget { kind, unit: input.unit().to_string(), node: input.node_name.clone(), kubectl, charts, sysctl }
}

/// The registries the bundle's images come from (`docker.io`, `quay.io`): what a site
/// mirror stands in for.
fn upstream_registries(m: &Manifest) -> Vec<String> {
    let mut out: Vec<String> =
        m.images.iter().filter_map(|i| i.reference.split_once('/').map(|(host, _)| host.to_string())).collect();
    out.sort();
    out.dedup();
    out
}

/// The token: kept from an earlier run, read from the join token file, or new.
fn cluster_token(host: &dyn Host, answers: &Answers) -> Result<Token> {
    if let Some(join) = &answers.join {
        let bytes = host.read_file(&join.token_file)?.ok_or_else(|| {
            // The token file is a path on the node: under --root, below the root.
            let on_node = crate::host::shown_path(host.root(), &join.token_file);
            let under_root = if host.root() == Path::new("/") {
                String::new()
            } else {
                format!(
                    " (the token file is a path on the node: under --root {}, it is read there)",
                    host.root().display()
                )
            };
            Error::input(
                format!("{}: join.token_file", answers.origin),
                format!("`{}` does not exist{under_root}", on_node.display()),
            )
            .with_hint(format!(
                "copy the token from the node that started the cluster: `scp <first-server>:{} {}`",
                state::CLUSTER_TOKEN_PATH,
                on_node.display()
            ))
        })?;
        let t = String::from_utf8_lossy(&bytes).trim().to_string();
        if t.is_empty() {
            return Err(Error::input(join.token_file.display().to_string(), "the join token file is empty"));
        }
        return Ok(Token::new(t));
    }
    if let Some(bytes) = host.read_file(Path::new(state::CLUSTER_TOKEN_PATH))? {
        let t = String::from_utf8_lossy(&bytes).trim().to_string();
        if !t.is_empty() {
            return Ok(Token::new(t));
        }
    }
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| Error::new(airlock_format::ErrorKind::Io, "random", "the system random generator failed"))?;
    Ok(Token::new(hex::encode(raw)))
}

fn distribution_input(
    staged: &Staged,
    profile: &Profile,
    answers: &Answers,
    token: Token,
) -> Result<DistributionInput> {
    let m = &staged.manifest;
    let dist = m.distribution.as_ref().expect("checked by prepare");
    let is_image_tarball =
        |n: &str| n.contains("images") && (n.ends_with(".tar") || n.ends_with(".tar.zst") || n.ends_with(".tar.gz"));
    let artifacts = match dist.kind {
        DistributionKind::K3s => {
            let binary = dist.artifacts.iter().find(|a| a.name == "k3s").ok_or_else(|| {
                Error::input(
                    format!("bundle {} {}", m.name, m.version),
                    "the K3s distribution has no `k3s` binary artifact",
                )
            })?;
            Artifacts::K3s {
                binary: binary.path.clone(),
                images: dist.artifacts.iter().filter(|a| is_image_tarball(&a.name)).map(|a| a.path.clone()).collect(),
            }
        }
        DistributionKind::Rke2 => {
            let tarball =
                dist.artifacts.iter().find(|a| a.name.starts_with("rke2.linux-") && a.name.ends_with(".tar.gz"));
            let tarball = tarball.ok_or_else(|| {
                Error::input(
                    format!("bundle {} {}", m.name, m.version),
                    "the RKE2 distribution has no rke2.linux-<arch>.tar.gz",
                )
            })?;
            distribution::unpack_rke2_tarball(&staged.path(&tarball.path), &staged.dir)?;
            Artifacts::Rke2 {
                tarball: distribution::read_unpacked_rke2(&staged.dir)?,
                images: dist.artifacts.iter().filter(|a| is_image_tarball(&a.name)).map(|a| a.path.clone()).collect(),
            }
        }
    };
    let role = match (answers.node.role, answers.join.as_ref(), answers.ha.is_some()) {
        (crate::site::answers::Role::Agent, Some(j), _) => distribution::Role::Agent { server: j.server.to_string() },
        (crate::site::answers::Role::Agent, None, _) => {
            return Err(Error::input(
                format!("{}: join", answers.origin),
                "an agent needs `join` (server and token file)",
            ))
        }
        (crate::site::answers::Role::Server, Some(j), _) => {
            distribution::Role::JoinServer { server: j.server.to_string() }
        }
        (crate::site::answers::Role::Server, None, true) => distribution::Role::FirstServer,
        (crate::site::answers::Role::Server, None, false) => distribution::Role::SingleServer,
    };
    let (disable, embedded_registry, secrets_encryption, cis, kube_apiserver_args) = match &profile.options {
        Options::K3s(o) => (o.disable.clone(), o.embedded_registry, o.secrets_encryption, false, Vec::new()),
        Options::Rke2(o) => (o.disable.clone(), false, true, o.cis, o.kube_apiserver_arg.clone()),
    };
    let data_dir = data_dir_for(answers, dist.kind);
    let mut charts = Vec::new();
    for c in m.charts.iter().filter(|c| profile.components.contains(&c.component)) {
        let storage = c.name == wiring::LOCAL_PATH_CHART;
        if storage && !needs_storage_provisioner(dist.kind, &disable) {
            continue;
        }
        let tgz = fs::read(staged.path(&c.path)).at(staged.path(&c.path))?;
        let (namespace, values_yaml) = if storage {
            let dir = data_dir.clone().unwrap_or_else(|| PathBuf::from(distribution::default_data_dir(dist.kind)));
            let values = wiring::local_path_values(&m.charts, &c.path, &dir.join("storage"))?;
            (distribution::HELM_CHART_NAMESPACE.to_string(), values)
        } else {
            (c.component.clone(), String::new())
        };
        charts.push(ChartInput {
            name: c.name.clone(),
            version: c.version.clone(),
            namespace,
            entry: c.path.clone(),
            tgz,
            values_yaml,
            values_secret: false,
        });
    }
    let mut tls_san: Vec<String> = vec![answers.node.ip.to_string()];
    tls_san.extend(answers.cluster.tls_san.iter().map(Address::to_string));
    tls_san.dedup();
    Ok(DistributionInput {
        version: dist.version.clone(),
        role,
        node_name: answers.node.name.clone(),
        node_ip: vec![answers.node.ip],
        tls_san,
        token,
        cluster_cidr: vec![answers.cluster.cluster_cidr],
        service_cidr: vec![answers.cluster.service_cidr],
        cluster_dns: Some(answers.cluster.cluster_dns),
        disable,
        embedded_registry,
        secrets_encryption,
        cis,
        kube_apiserver_args,
        data_dir,
        registry_mirror: answers.registry.as_ref().map(|r| RegistryMirror {
            endpoint: r.mirror.to_string(),
            // Without a CA of their own, the mirror's certificate is one our PKI issued.
            ca_file: r.ca_file.clone().unwrap_or_else(|| PathBuf::from(state::CA_CERT)),
            registries: upstream_registries(m),
            auth: r.username.clone().zip(r.password.clone()),
            pushed: r
                .pushes()
                .then(|| distribution::PushedImages { prefix: r.prefix.clone(), archive_too: r.archives() }),
        }),
        artifacts,
        image_archive_entry: IMAGE_ARCHIVE_ENTRY.to_string(),
        charts,
        rke2_opt_prefix: None,
        proxy_env: answers
            .proxy
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), crate::site::answers::Secret::new(v)))
            .collect(),
    })
}

/// Whether `/usr/local` is read-only or a mount point of its own on the running
/// system, where RKE2's `install.sh` unpacks under `/opt/rke2` instead. Read from the
/// mount table through the host seam; a target root is the image's own business and
/// keeps `/usr/local`.
fn usr_local_unfit(host: &dyn Host) -> Result<bool> {
    if !host.live() {
        return Ok(false);
    }
    let Some(mounts) = host.read_file(Path::new("/proc/self/mounts"))? else { return Ok(false) };
    let m = crate::site::preflight::usr_local_mount(&String::from_utf8_lossy(&mounts));
    Ok(m.mount_point || m.read_only)
}

/// The original text of the tarball files `install.sh` rewrites for `/opt/rke2`.
fn opt_prefix_texts(staged: &Staged) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for e in distribution::read_unpacked_rke2(&staged.dir)? {
        if distribution::rewritten_for_opt_prefix(&e.path) {
            let p = staged.path(&format!("{}/{}", distribution::RKE2_UNPACK_DIR, e.path));
            out.insert(e.path.clone(), fs::read_to_string(&p).at(&p)?);
        }
    }
    Ok(out)
}

/// Whether the distribution brings no storage provisioner of its own, so the bundle's
/// local-path chart is installed: always on RKE2 (contracts: it ships none); on K3s
/// only when its built-in one (`local-storage`) is disabled, so two provisioners never
/// compete for the `local-path` class.
fn needs_storage_provisioner(kind: DistributionKind, disable: &[String]) -> bool {
    match kind {
        DistributionKind::Rke2 => true,
        DistributionKind::K3s => disable.iter().any(|d| d == "local-storage"),
    }
}

/// The distribution's data dir below the answers' `data_dir` (`/var/lib/rancher/k3s`
/// for the default), or `None` when that is the distribution's own default.
fn data_dir_for(answers: &Answers, kind: DistributionKind) -> Option<PathBuf> {
    let dir = answers.data_dir.join(match kind {
        DistributionKind::K3s => "k3s",
        DistributionKind::Rke2 => "rke2",
    });
    (dir != Path::new(distribution::default_data_dir(kind))).then_some(dir)
}

fn release_record(staged: &Staged, profile: &Profile) -> Result<Vec<u8>> {
    Ok(ReleaseRecord::of(&staged.manifest, staged.signer.key_id_hex(), &profile.name).to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_storage_chart_goes_on_rke2_and_on_k3s_only_without_its_builtin_one() {
        assert!(needs_storage_provisioner(DistributionKind::Rke2, &[]));
        assert!(!needs_storage_provisioner(DistributionKind::K3s, &[]));
        assert!(!needs_storage_provisioner(DistributionKind::K3s, &["traefik".into()]));
        assert!(needs_storage_provisioner(DistributionKind::K3s, &["local-storage".into()]));
    }

    #[test]
    fn distribution_storage_chart_values_put_volumes_under_the_data_directory_over_the_vendors() {
        let chart = airlock_format::manifest::Chart {
            name: "local-path-provisioner".into(),
            version: "0.1.0".into(),
            app_version: None,
            component: "local-path".into(),
            path: "charts/local-path-provisioner-0.1.0.tgz".into(),
            values: Some(serde_json::json!({"nodePath": "/vendor", "image": "registry.example/lpp:v1"})),
        };
        let v = wiring::local_path_values(
            &[chart],
            "charts/local-path-provisioner-0.1.0.tgz",
            Path::new("/srv/rke2/storage"),
        )
        .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&v).unwrap();
        assert_eq!(v["nodePath"], "/srv/rke2/storage");
        assert_eq!(v["image"], "registry.example/lpp:v1", "the vendor's image stays");
    }
}
