//! What the collector found on the host, as plain data.
//!
//! Facts are gathered once and then judged by pure checks, so a report can be
//! reproduced from a saved `facts.json` (a support ticket, a test fixture) without the
//! host. Anything the collector could not read is `None` or empty, with the reason in
//! [`Facts::unavailable`], and the check that needs it warns instead of guessing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::thresholds::Distribution;

/// The kernel settings the collector reads from `/proc/sys`: those RKE2's CIS profile
/// checks at start.
pub const SYSCTL_KEYS: &[&str] = &["vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops"];

/// Everything the checks look at.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// The root the files were read under (`/` on a live host).
    pub root: PathBuf,
    /// Whether the running kernel was asked too (uname, gethostname, getifaddrs,
    /// adjtimex, the resolver). Off for fixture trees, whose facts come from files only.
    pub live: bool,
    pub cpu: CpuFacts,
    pub memory: Option<MemoryFacts>,
    /// Active swap areas from `/proc/swaps`; `None` if it could not be read.
    pub swap: Option<Vec<SwapArea>>,
    pub disk: Option<DiskFacts>,
    /// `uname -r`.
    pub kernel_release: Option<String>,
    pub cgroup: CgroupFacts,
    pub modules: ModuleFacts,
    pub network: NetworkFacts,
    pub dns: DnsFacts,
    pub hostname: HostnameFacts,
    pub time: TimeFacts,
    pub selinux: SelinuxFacts,
    pub services: ServiceFacts,
    /// K3s/RKE2 installs found on the host, one entry per distribution with files.
    pub existing: Vec<ExistingInstall>,
    /// Airlock's own journal on the host (`/var/lib/airlock/journal.json`): an install
    /// by airlock ran here, so its files and listeners are a re-run's to continue.
    #[serde(default)]
    pub airlock_journal: Option<PathBuf>,
    pub fsync: FsyncFacts,
    /// Kernel settings read from `/proc/sys` (`vm.overcommit_memory` → `1`), for the
    /// keys in [`SYSCTL_KEYS`] that could be read.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// What a hardened RHEL host adds: fapolicyd, a read-only `/usr/local`, FIPS mode.
    #[serde(default)]
    pub hardening: HardeningFacts,
    /// The join token file, when the collector was told where it is (joining nodes).
    pub join_token: Option<JoinTokenFacts>,
    /// Fact name (`memory`, `routes`, …) → why it could not be gathered.
    pub unavailable: BTreeMap<String, String>,
}

impl Facts {
    /// Why the fact `name` is missing, if the collector said.
    pub fn why_unavailable(&self, name: &str) -> Option<&str> {
        self.unavailable.get(name).map(String::as_str)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFacts {
    /// `x86_64`, `aarch64`, … (uname machine, or inferred from `/proc/cpuinfo`).
    pub arch: Option<String>,
    /// Online logical CPUs (`processor` entries in `/proc/cpuinfo`).
    pub count: Option<u32>,
    /// The first CPU's `flags` (x86) or `Features` (arm) line.
    pub flags: Vec<String>,
    pub model: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryFacts {
    pub total_kib: u64,
    pub available_kib: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapArea {
    /// `/dev/dm-1`, `/swap.img`, `/dev/zram0`.
    pub name: String,
    /// `partition` or `file`.
    pub kind: String,
    pub size_kib: u64,
    pub used_kib: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskFacts {
    /// The data directory asked about.
    pub data_dir: PathBuf,
    /// The directory actually measured: the data directory or, before the install
    /// created it, its nearest existing ancestor (the same filesystem unless a mount
    /// is added later).
    pub measured: PathBuf,
    pub total_bytes: u64,
    /// Free bytes an unprivileged writer may use (`f_bavail`); root may get a little
    /// more, the kubelet's eviction maths does not.
    pub available_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupFacts {
    /// `None` if neither `cgroup.controllers` nor `/proc/cgroups` could be read.
    pub version: Option<CgroupVersion>,
    /// Enabled controllers: v2 root `cgroup.controllers`, v1 `/proc/cgroups` with enabled=1.
    pub controllers: Vec<String>,
}

/// Where a kernel module stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModuleState {
    /// In `/proc/modules`.
    Loaded,
    /// In `modules.builtin` (or `/sys/module/<name>` without being loaded).
    Builtin,
    /// Not loaded, but `modules.dep` lists it, so `modprobe` can load it.
    Loadable,
    /// None of the above.
    Missing,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleFacts {
    /// `/lib/modules/<release>` if it exists; without it a missing module cannot be
    /// told apart from one the host (or a container's host) provides.
    pub modules_dir: Option<PathBuf>,
    /// State of each module the collector was asked about, by name (`br_netfilter`).
    pub states: BTreeMap<String, ModuleState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRoute {
    pub interface: String,
    /// `None` for a device route (`default dev dummy0`).
    pub gateway: Option<IpAddr>,
    pub metric: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceAddress {
    /// Known from getifaddrs; `/proc/net/fib_trie` does not say.
    pub interface: Option<String>,
    pub address: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A bound socket: a TCP listener or an unconnected UDP socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    /// Socket inode; 0 for sockets the kernel itself holds (VXLAN, WireGuard).
    pub inode: u64,
    /// `comm` of the process holding it, if `/proc/<pid>/fd` could be read.
    pub process: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFacts {
    /// From `/proc/net/route`.
    pub ipv4_default_routes: Vec<DefaultRoute>,
    /// From `/proc/net/ipv6_route` (the kernel's `lo` reject routes left out).
    pub ipv6_default_routes: Vec<DefaultRoute>,
    /// Every IPv4 address, loopback included (the check filters).
    pub ipv4_addresses: Vec<InterfaceAddress>,
    /// From `/proc/net/{tcp,tcp6,udp,udp6}`.
    pub listeners: Vec<Listener>,
}

impl NetworkFacts {
    /// The address this host most likely goes by: an IPv4 address of the interface the
    /// default route with the lowest metric leaves through. Without a default route (an
    /// air-gapped host often has none), the only non-loopback, non-link-local IPv4
    /// address when there is exactly one; otherwise `None` (no guess among several).
    pub fn primary_ip(&self) -> Option<IpAddr> {
        let usable = |a: &&InterfaceAddress| !a.address.is_loopback() && !a.address.is_link_local();
        let mut routes: Vec<&DefaultRoute> = self.ipv4_default_routes.iter().collect();
        routes.sort_by_key(|r| r.metric);
        for r in routes {
            let on_it =
                self.ipv4_addresses.iter().filter(usable).find(|a| a.interface.as_deref() == Some(&r.interface));
            if let Some(a) = on_it {
                return Some(IpAddr::V4(a.address));
            }
        }
        match self.ipv4_addresses.iter().filter(usable).collect::<Vec<_>>().as_slice() {
            [only] => Some(IpAddr::V4(only.address)),
            _ => None,
        }
    }
}

/// One resolv.conf-style file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvConf {
    /// As seen on the target (`/etc/resolv.conf`).
    pub path: PathBuf,
    pub nameservers: Vec<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsFacts {
    /// `/etc/resolv.conf`; `None` if missing.
    pub etc: Option<ResolvConf>,
    /// `/run/systemd/resolve/resolv.conf`, which K3s and RKE2 fall back to when
    /// `/etc/resolv.conf` names only loopback servers.
    pub systemd_resolved: Option<ResolvConf>,
    /// The file the install will pass as `resolv-conf`, if one is configured.
    pub configured_path: Option<PathBuf>,
    /// Its content, `None` if it is configured but missing.
    pub configured: Option<ResolvConf>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostnameFacts {
    pub name: Option<String>,
    /// Addresses `/etc/hosts` gives the name.
    pub hosts_file: Vec<IpAddr>,
    /// What the system resolver (nsswitch: files, myhostname, dns) answered; `None`
    /// when it was not asked (fixture trees, or `/etc/hosts` already answered).
    pub resolver: Option<ResolverAnswer>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolverAnswer {
    pub addresses: Vec<IpAddr>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeFacts {
    /// The kernel's clock discipline state (adjtimex); chronyd, ntpd and
    /// systemd-timesyncd all clear STA_UNSYNC once they have synchronised.
    pub kernel: Option<KernelClock>,
    /// `/run/systemd/timesync/synchronized` exists.
    pub timesyncd_synchronized: bool,
    /// Time daemons seen running (`chronyd`, `ntpd`, `systemd-timesyn`).
    pub daemons: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelClock {
    pub synchronized: bool,
    pub max_error_us: i64,
    pub est_error_us: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelinuxMode {
    Enforcing,
    Permissive,
    #[default]
    Disabled,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelinuxFacts {
    /// The running mode (`/sys/fs/selinux/enforce`); no selinuxfs means disabled.
    pub mode: SelinuxMode,
    /// `SELINUX=` in `/etc/selinux/config`: the mode after the next boot.
    pub configured_mode: Option<String>,
    /// `SELINUXTYPE=` (`targeted`).
    pub policy_type: Option<String>,
    /// Modules in the policy store (`/var/lib/selinux/<type>/active/modules/*/`).
    pub modules: Vec<String>,
    /// Policy packages on disk (`/usr/share/selinux/packages/*.pp[.bz2]`): an RPM
    /// installed without its scriptlets leaves these but no store module.
    pub packaged: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardeningFacts {
    /// A `fapolicyd` process is running: it denies executing files its rules do not
    /// allow, such as the containerd and CNI binaries under the data directory.
    pub fapolicyd_running: bool,
    /// The mount `/usr/local` lives on (`/proc/self/mounts`); `None` if unreadable.
    pub usr_local: Option<UsrLocalMount>,
    /// `/proc/sys/crypto/fips_enabled` is `1`; `None` if unreadable.
    pub fips: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsrLocalMount {
    /// `/usr/local` is itself a mount point.
    pub mount_point: bool,
    /// Mounted read-only (its own mount, or the one it lives on).
    pub read_only: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFacts {
    /// Pid of a running firewalld (from its pid file or the process table).
    pub firewalld_pid: Option<u32>,
    /// `firewalld.service` is enabled to start at boot.
    pub firewalld_enabled: bool,
    /// `nm-cloud-setup.service` or its timer is enabled: the K3s unit refuses to start
    /// and RKE2's CNI routes get rewritten.
    pub nm_cloud_setup_enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistingInstall {
    pub distribution: Distribution,
    /// Paths on the target that gave it away (`/usr/local/bin/k3s`).
    pub paths: Vec<PathBuf>,
    /// Processes of it that are running.
    pub running: Vec<String>,
}

/// The join token file's metadata; its content is a secret and never read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenFacts {
    /// As seen on the target (`/var/lib/airlock/secrets/cluster-token` unless told otherwise).
    pub path: PathBuf,
    /// A regular file exists there.
    pub present: bool,
    pub size_bytes: u64,
    /// Permission bits (`0o600`).
    pub mode: Option<u32>,
}

/// The etcd WAL fsync probe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum FsyncFacts {
    #[default]
    NotRun,
    Measured(FsyncMeasurement),
    Failed {
        dir: PathBuf,
        error: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FsyncMeasurement {
    /// The directory the probe file was written in.
    pub dir: PathBuf,
    /// fdatasync calls measured.
    pub samples: u32,
    pub block_bytes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub elapsed_ms: f64,
    /// The time budget ran out before all writes were done: the disk is slow.
    pub stopped_early: bool,
}
