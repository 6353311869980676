//! What the host must offer: the limits the checks compare facts against.
//!
//! A profile maps its YAML onto [`Thresholds`]; [`Thresholds::defaults`] gives the
//! floor for each distribution so a profile only states what it changes. The disk
//! figure is the caller's to compute from the bundle (see [`Thresholds::disk_for_bundle`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The Kubernetes distribution the install lays down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    K3s,
    Rke2,
}

impl Distribution {
    pub const ALL: [Distribution; 2] = [Distribution::K3s, Distribution::Rke2];

    pub fn name(self) -> &'static str {
        match self {
            Distribution::K3s => "k3s",
            Distribution::Rke2 => "rke2",
        }
    }

    /// The ports the distribution binds (contracts.md, "Ports (preflight)").
    pub fn ports(self) -> PortSet {
        let r = PortRange::new;
        match self {
            // 5001 is the embedded registry (spegel); it is only bound with
            // `embedded-registry: true`, but the profile can drop it when off.
            Distribution::K3s => PortSet {
                tcp: vec![r(6443, 6443), r(2379, 2380), r(10250, 10250), r(5001, 5001)],
                udp: vec![r(8472, 8472), r(51820, 51821)],
            },
            Distribution::Rke2 => PortSet {
                tcp: vec![r(6443, 6443), r(9345, 9345), r(2379, 2381), r(10250, 10250), r(30000, 32767)],
                udp: vec![r(8472, 8472)],
            },
        }
    }

    /// The SELinux policy RPMs an enforcing host needs before the distribution starts.
    pub fn selinux_policies(self) -> Vec<SelinuxPolicy> {
        let container = SelinuxPolicy { rpm: "container-selinux".into(), module: "container".into() };
        match self {
            Distribution::K3s => vec![container, SelinuxPolicy { rpm: "k3s-selinux".into(), module: "k3s".into() }],
            Distribution::Rke2 => vec![container, SelinuxPolicy { rpm: "rke2-selinux".into(), module: "rke2".into() }],
        }
    }

    /// Process names (`/proc/<pid>/comm`, at most 15 bytes) that belong to a running
    /// install of this distribution; their listeners are expected on an upgrade.
    pub fn process_names(self) -> &'static [&'static str] {
        match self {
            // K3s runs everything, etcd included, inside one process.
            Distribution::K3s => &["k3s", "k3s-server", "k3s-agent", "containerd"],
            Distribution::Rke2 => &[
                "rke2",
                "etcd",
                "kube-apiserver",
                "kubelet",
                "kube-proxy",
                "kube-controller",
                "kube-scheduler",
                "containerd",
                "cloud-controlle",
            ],
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An inclusive port range; a single port has `start == end`. Written as `6443` or
/// `2379-2380` everywhere (profiles, reports, saved facts). Profiles use it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn new(start: u16, end: u16) -> Self {
        Self { start, end }
    }
    pub fn single(port: u16) -> Self {
        Self { start: port, end: port }
    }
    pub fn contains(self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `6443` or `2379-2380`, the form contracts.md and profiles use.
impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |p: &str| p.trim().parse::<u16>().map_err(|_| format!("`{s}` is not a port or a port range"));
        match s.split_once('-') {
            Some((a, b)) => {
                let (start, end) = (num(a)?, num(b)?);
                if start > end {
                    return Err(format!("port range `{s}` ends before it starts"));
                }
                Ok(Self { start, end })
            }
            None => Ok(Self::single(num(s)?)),
        }
    }
}

/// Ports that must be free, by protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSet {
    pub tcp: Vec<PortRange>,
    pub udp: Vec<PortRange>,
}

/// One SELinux policy RPM and the policy module it installs into the module store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelinuxPolicy {
    /// The package name, e.g. `k3s-selinux`.
    pub rpm: String,
    /// The module it loads, e.g. `k3s` (`/var/lib/selinux/<type>/active/modules/*/k3s`).
    pub module: String,
}

/// A kernel version as `uname -r` starts it: `5.14.0-427.el9.x86_64` is 5.14.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    pub fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }
}

/// Reads the leading `major.minor[.patch]` of a release string and ignores the rest
/// (distribution suffixes, `-rc1`, `+`), so both `4.18` and a full `uname -r` parse.
impl FromStr for KernelVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = [0u32; 3];
        let mut seen = 0;
        for (i, piece) in s.trim().split('.').take(3).enumerate() {
            let digits: String = piece.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                break;
            }
            parts[i] = digits.parse().map_err(|_| format!("`{s}` is not a kernel version"))?;
            seen = i + 1;
            if digits.len() != piece.len() {
                break;
            }
        }
        if seen < 2 {
            return Err(format!("`{s}` is not a kernel version (expected major.minor[.patch])"));
        }
        Ok(Self { major: parts[0], minor: parts[1], patch: parts[2] })
    }
}

impl TryFrom<String> for KernelVersion {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<KernelVersion> for String {
    fn from(v: KernelVersion) -> String {
        v.to_string()
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The limits every check compares against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub distribution: Distribution,
    pub min_cpus: u32,
    /// Below this the check warns (the platform runs, but slowly); `None`: no warning.
    pub recommended_cpus: Option<u32>,
    /// Require the x86-64-v2 instruction set on x86_64 hosts (see `cpu-x86-64-v2`).
    pub require_x86_64_v2: bool,
    pub min_memory_mib: u64,
    pub recommended_memory_mib: Option<u64>,
    /// Free bytes the data directory's filesystem must have: the larger of the
    /// profile's floor and the bundle's image bytes × headroom.
    pub min_free_disk_bytes: u64,
    /// Below this the check warns (the profile's `sizing.disk_gib`).
    pub recommended_free_disk_bytes: Option<u64>,
    pub min_kernel: KernelVersion,
    pub required_modules: Vec<String>,
    pub required_cgroup_controllers: Vec<String>,
    pub ports: PortSet,
    /// etcd's guidance: 99th percentile of WAL fdatasync under 10 ms. `None` when this
    /// node runs no etcd (single-node K3s keeps its state in SQLite): no probe, no check.
    pub max_fsync_p99_ms: Option<f64>,
    /// Needed only when SELinux is enforcing or permissive.
    pub selinux_policies: Vec<SelinuxPolicy>,
    /// Kernel settings (`vm.overcommit_memory`, `1`) the distribution refuses to start
    /// without: RKE2's CIS profile. Empty: no check.
    #[serde(default)]
    pub required_sysctls: Vec<(String, String)>,
}

impl Thresholds {
    /// The floor for `distribution` (its documented minimums, its ports and policy
    /// RPMs); `min_free_disk_bytes` is a placeholder the caller replaces with
    /// [`Thresholds::disk_for_bundle`].
    pub fn defaults(distribution: Distribution) -> Self {
        let (min_memory_mib, min_cpus) = match distribution {
            Distribution::K3s => (2048, 2),
            Distribution::Rke2 => (4096, 2),
        };
        Self {
            distribution,
            min_cpus,
            recommended_cpus: Some(4),
            // Keycloak's and other UBI 9 based images abort on CPUs without x86-64-v2
            // ("Fatal glibc error: CPU does not support x86-64-v2"), which a VM with
            // the generic `qemu64` CPU model does not have.
            require_x86_64_v2: true,
            min_memory_mib,
            recommended_memory_mib: Some(8192),
            min_free_disk_bytes: 20 << 30,
            recommended_free_disk_bytes: None,
            min_kernel: KernelVersion::new(4, 18, 0),
            required_modules: vec!["overlay".into(), "br_netfilter".into()],
            required_cgroup_controllers: vec!["cpu".into(), "cpuset".into(), "memory".into(), "pids".into()],
            ports: distribution.ports(),
            max_fsync_p99_ms: Some(10.0),
            selinux_policies: distribution.selinux_policies(),
            required_sysctls: Vec::new(),
        }
    }

    /// Free space for a bundle of `bundle_bytes`: the bundle is unpacked into staging
    /// and imported into containerd, so it is needed several times over (`headroom`,
    /// e.g. 3.0), rounded up.
    pub fn disk_for_bundle(bundle_bytes: u64, headroom: f64) -> u64 {
        (bundle_bytes as f64 * headroom.max(1.0)).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse_from_uname_releases() {
        assert_eq!("5.14.0-427.el9.x86_64".parse::<KernelVersion>().unwrap(), KernelVersion::new(5, 14, 0));
        assert_eq!("6.8.0-45-generic".parse::<KernelVersion>().unwrap(), KernelVersion::new(6, 8, 0));
        assert_eq!("4.18".parse::<KernelVersion>().unwrap(), KernelVersion::new(4, 18, 0));
        assert_eq!("6.10-rc1".parse::<KernelVersion>().unwrap(), KernelVersion::new(6, 10, 0));
        assert_eq!("6.18.44-fc-v595".parse::<KernelVersion>().unwrap(), KernelVersion::new(6, 18, 44));
        assert!("linux".parse::<KernelVersion>().is_err());
        assert!("6".parse::<KernelVersion>().is_err());
        assert!(KernelVersion::new(5, 4, 0) < KernelVersion::new(5, 14, 0));
    }

    #[test]
    fn kernel_version_serializes_as_a_string() {
        let v: KernelVersion = serde_json::from_str("\"5.4\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"5.4.0\"");
    }

    #[test]
    fn port_ranges_parse_and_print_as_contracts_write_them() {
        assert_eq!("2379-2380".parse::<PortRange>().unwrap(), PortRange::new(2379, 2380));
        assert_eq!("6443".parse::<PortRange>().unwrap().to_string(), "6443");
        assert!("2380-2379".parse::<PortRange>().is_err());
        assert!("http".parse::<PortRange>().is_err());
        assert!(PortRange::new(30000, 32767).contains(30080));
    }

    #[test]
    fn rke2_defaults_carry_the_supervisor_port_and_nodeports() {
        let t = Thresholds::defaults(Distribution::Rke2);
        assert!(t.ports.tcp.iter().any(|r| r.contains(9345)));
        assert!(t.ports.tcp.iter().any(|r| r.contains(31000)));
        assert!(t.selinux_policies.iter().any(|p| p.rpm == "rke2-selinux"));
        assert_eq!(Thresholds::disk_for_bundle(10, 2.5), 25);
    }
}
