//! Preflight for one node of a site: the profile's limits for this node's role, the
//! bundle's size, the answers' data directory and overrides — what `airlock preflight`
//! and `airlock install` both run before anything changes.
//!
//! The profile states only what it changes ([`crate::site::profile::Thresholds`]); the rest is
//! the distribution's floor ([`Thresholds::defaults`]). Where the profile is silent on
//! etcd, the probe runs exactly where etcd does: every RKE2 server, and K3s servers of
//! an HA profile (a single K3s server keeps its state in SQLite).

use std::path::{Path, PathBuf};

use airlock_format::error::Result;
use airlock_format::manifest::{DistributionKind, Manifest};

use super::{collect, run, CollectOptions, Distribution, KernelVersion, Mode, PortSet, PreflightReport, Thresholds};
use crate::site::answers::{Answers, Role};
use crate::site::profile::Profile;

/// The headroom over the bundle's image bytes when the profile names none: the archive,
/// containerd's content store and the unpacked snapshots (docs/profiles.md).
pub const DEFAULT_DISK_HEADROOM: f64 = 3.0;

/// etcd's guidance for the WAL fdatasync 99th percentile.
const ETCD_FSYNC_P99_MS: f64 = 10.0;

/// The distribution preflight knows by the manifest's name for it.
pub fn distribution_of(kind: DistributionKind) -> Distribution {
    match kind {
        DistributionKind::K3s => Distribution::K3s,
        DistributionKind::Rke2 => Distribution::Rke2,
    }
}

/// Bytes of image content in the bundle (the OCI layout's blobs): what the disk check
/// multiplies by the headroom.
pub fn image_bytes(manifest: &Manifest) -> u64 {
    manifest.entries.iter().filter(|e| e.path.starts_with("oci/")).map(|e| e.size).sum()
}

/// The limits a node of `role` is held to under `profile`, for a bundle carrying
/// `image_bytes` of images.
pub fn thresholds_for(profile: &Profile, role: Role, image_bytes: u64) -> Thresholds {
    let distribution = distribution_of(profile.distribution);
    let mut t = Thresholds::defaults(distribution);
    let p = &profile.preflight;
    if let Some(n) = p.min_cpus {
        t.min_cpus = n;
    }
    t.recommended_cpus = Some(profile.sizing.cpus.max(t.min_cpus));
    if let Some(n) = p.min_memory_mib {
        t.min_memory_mib = n;
    }
    t.recommended_memory_mib = Some(profile.sizing.memory_mib.max(t.min_memory_mib));
    let floor = p.min_free_disk_gib.map(|g| g << 30).unwrap_or(t.min_free_disk_bytes);
    let for_images = Thresholds::disk_for_bundle(image_bytes, p.disk_headroom.unwrap_or(DEFAULT_DISK_HEADROOM));
    t.min_free_disk_bytes = floor.max(for_images);
    t.recommended_free_disk_bytes = Some((profile.sizing.disk_gib << 30).max(t.min_free_disk_bytes));
    if let Some(k) = p.min_kernel.as_deref().and_then(|k| k.parse::<KernelVersion>().ok()) {
        t.min_kernel = k;
    }
    if let Some(m) = &p.kernel_modules {
        t.required_modules = m.clone();
    }
    if let Some(ports) = profile.ports(role) {
        t.ports = PortSet { tcp: ports.tcp.clone(), udp: ports.udp.clone() };
    }
    if matches!(&profile.options, crate::site::profile::Options::Rke2(o) if o.cis) {
        t.required_sysctls =
            crate::render::distribution::CIS_SYSCTLS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }
    let runs_etcd = role == Role::Server && (distribution == Distribution::Rke2 || profile.is_ha());
    t.max_fsync_p99_ms = if runs_etcd { Some(p.max_etcd_fsync_p99_ms.unwrap_or(ETCD_FSYNC_P99_MS)) } else { None };
    t
}

/// What a site preflight needs besides the host.
pub struct SiteInput<'a> {
    pub profile: &'a Profile,
    pub role: Role,
    pub mode: Mode,
    pub image_bytes: u64,
    /// The data directory as a path on the target (`/var/lib/rancher`).
    pub data_dir: PathBuf,
    /// The join token file on the target, on joining nodes.
    pub join_token_file: Option<PathBuf>,
    /// Override names: the answers' `preflight.overrides` and any given on the command line.
    pub overrides: Vec<String>,
}

impl<'a> SiteInput<'a> {
    /// The input for installing (or joining with) these answers.
    pub fn from_answers(profile: &'a Profile, answers: &Answers, image_bytes: u64, extra: &[String]) -> Self {
        let mode = if answers.join.is_some() { Mode::Join } else { Mode::Install };
        let mut overrides = answers.preflight.overrides.clone();
        overrides.extend(extra.iter().cloned());
        Self {
            profile,
            role: answers.node.role,
            mode,
            image_bytes,
            data_dir: answers.data_dir.clone(),
            join_token_file: answers.join.as_ref().map(|j| j.token_file.clone()),
            overrides,
        }
    }
}

/// Collects the facts under `root` and judges them. In a target root (not `/`) only
/// what the tree holds is read; what only the running kernel knows is reported as
/// unavailable rather than taken from the machine running the installer.
pub fn check(root: &Path, input: &SiteInput<'_>) -> Result<PreflightReport> {
    let mut thresholds = thresholds_for(input.profile, input.role, input.image_bytes);
    if root != Path::new("/") {
        // The tree's filesystem only has to hold what the install writes; the site's
        // floor for a running cluster and etcd's latency belong to the node's own disk,
        // which `airlock preflight` measures there.
        let headroom = input.profile.preflight.disk_headroom.unwrap_or(DEFAULT_DISK_HEADROOM);
        thresholds.min_free_disk_bytes = Thresholds::disk_for_bundle(input.image_bytes, headroom);
        thresholds.recommended_free_disk_bytes = None;
        thresholds.max_fsync_p99_ms = None;
    }
    let mut opts = CollectOptions::for_thresholds(&thresholds);
    opts.join_token_file = input.join_token_file.clone();
    // Resolved as the host resolves it, so a link on the way stays inside the root.
    let data_dir =
        crate::host::Host::real_path(&crate::host::RootedHost::new(root.to_path_buf(), false)?, &input.data_dir)?;
    let facts = collect(root, &data_dir, &opts);
    run(&facts, &thresholds, input.mode, &input.overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str) -> Profile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles").join(format!("{name}.yaml"));
        Profile::load(&path).unwrap()
    }

    #[test]
    fn a_single_k3s_server_is_not_held_to_etcd_fsync_limits() {
        let t = thresholds_for(&profile("single-node"), Role::Server, 0);
        assert_eq!(t.max_fsync_p99_ms, None);
        assert_eq!(t.distribution, Distribution::K3s);
    }

    #[test]
    fn ha_servers_probe_fsync_and_agents_do_not() {
        let ha = profile("ha");
        assert_eq!(thresholds_for(&ha, Role::Server, 0).max_fsync_p99_ms, Some(10.0));
        assert_eq!(thresholds_for(&ha, Role::Agent, 0).max_fsync_p99_ms, None);
        assert!(thresholds_for(&profile("rke2-cis"), Role::Server, 0).max_fsync_p99_ms.is_some());
    }

    #[test]
    fn profile_limits_replace_the_distribution_floor() {
        let p = profile("single-node");
        let t = thresholds_for(&p, Role::Server, 0);
        assert_eq!(t.min_memory_mib, p.preflight.min_memory_mib.unwrap());
        assert_eq!(t.min_cpus, p.preflight.min_cpus.unwrap());
        assert_eq!(t.recommended_memory_mib, Some(p.sizing.memory_mib));
        let ports = p.ports(Role::Server).unwrap();
        assert_eq!(t.ports.tcp, ports.tcp);
        assert_eq!(t.required_modules, p.preflight.kernel_modules.clone().unwrap());
    }

    #[test]
    fn disk_need_grows_with_the_bundles_images() {
        let p = profile("single-node");
        let floor = p.preflight.min_free_disk_gib.unwrap() << 30;
        assert_eq!(thresholds_for(&p, Role::Server, 1 << 30).min_free_disk_bytes, floor);
        let big = 100u64 << 30;
        let headroom = p.preflight.disk_headroom.unwrap();
        assert_eq!(thresholds_for(&p, Role::Server, big).min_free_disk_bytes, (big as f64 * headroom) as u64);
    }
}
