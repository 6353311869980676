//! The collector: reads the host into [`Facts`] without changing it.
//!
//! Every file is read under a root prefix (`<root>/proc/meminfo`), so a fixture tree
//! in a temp directory stands in for a host in tests and `/` is the live host. Files
//! are read through a [`RootedHost`] on that root, so a symlink in the tree
//! (`<root>/etc/hostname -> /etc/hostname`) resolves inside it, never to the machine
//! running the installer. The
//! few facts that have no file (kernel release via uname, addresses via getifaddrs,
//! the clock via adjtimex, the resolver) come from [`super::sys`] only in live mode;
//! a fixture tree supplies them as files the kernel also offers
//! (`/proc/sys/kernel/osrelease`, `/proc/net/fib_trie`). No commands are run.
//!
//! The collector never fails: what it cannot read it leaves empty and records in
//! [`Facts::unavailable`], and the check that needed it warns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::facts::*;
use super::fsync::{self, FsyncProbeOptions};
use super::sys;
use super::thresholds::{Distribution, Thresholds};
use crate::host::{Host, RootedHost};

/// What to collect beyond the fixed set.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectOptions {
    /// Ask the running kernel too; `None` means "when the root is `/`".
    pub live: Option<bool>,
    /// Run the etcd fsync probe in the data directory; `None` skips it.
    pub fsync_probe: Option<FsyncProbeOptions>,
    /// Kernel modules to look up (`modules.builtin`/`modules.dep` are too large to
    /// keep whole in the facts).
    pub modules: Vec<String>,
    /// The file the install will pass as `resolv-conf`, as a path on the target.
    pub resolv_conf: Option<PathBuf>,
    /// How long the resolver may take to answer for the hostname.
    pub resolver_timeout: Duration,
    /// The join token file (answers' `join.token_file`), as a path on the target;
    /// only its metadata is read.
    pub join_token_file: Option<PathBuf>,
}

impl Default for CollectOptions {
    fn default() -> Self {
        Self {
            live: None,
            fsync_probe: Some(FsyncProbeOptions::default()),
            modules: vec!["overlay".into(), "br_netfilter".into()],
            resolv_conf: None,
            resolver_timeout: Duration::from_secs(3),
            join_token_file: None,
        }
    }
}

impl CollectOptions {
    /// Options that gather what `thresholds` will be checked against: its modules, and
    /// the fsync probe only where etcd runs.
    pub fn for_thresholds(thresholds: &Thresholds) -> Self {
        let defaults = Self::default();
        Self {
            modules: thresholds.required_modules.clone(),
            fsync_probe: thresholds.max_fsync_p99_ms.and(defaults.fsync_probe.clone()),
            ..defaults
        }
    }
}

/// The running system's routes and addresses only: what the wizard needs to offer
/// this host's primary address ([`NetworkFacts::primary_ip`]) as `node.ip`.
pub fn live_network() -> NetworkFacts {
    let mut c = Collector {
        host: RootedHost::new(PathBuf::from("/"), false).ok(),
        root: PathBuf::from("/"),
        live: true,
        facts: Facts { root: PathBuf::from("/"), live: true, ..Facts::default() },
        processes: None,
    };
    c.network();
    c.facts.network
}

/// Reads the host under `root`. `data_dir` is the data directory as this process sees
/// it (already under `root` when installing into a target root); it need not exist yet.
pub fn collect(root: &Path, data_dir: &Path, opts: &CollectOptions) -> Facts {
    let live = opts.live.unwrap_or_else(|| root == Path::new("/"));
    let mut c = Collector {
        host: RootedHost::new(root.to_path_buf(), false).ok(),
        root: root.to_path_buf(),
        live,
        facts: Facts { root: root.to_path_buf(), live, ..Facts::default() },
        processes: None,
    };
    c.kernel();
    c.cpu();
    c.memory();
    c.swap();
    c.disk(data_dir);
    c.cgroup();
    c.modules(&opts.modules);
    c.network();
    c.dns(opts.resolv_conf.as_deref());
    c.hostname(opts.resolver_timeout);
    c.time();
    c.selinux();
    c.sysctls();
    c.hardening();
    c.services();
    c.existing();
    if let Some(token) = &opts.join_token_file {
        c.join_token(token);
    }
    if let Some(probe) = &opts.fsync_probe {
        c.fsync(data_dir, probe);
    }
    c.facts
}

struct Process {
    pid: u32,
    comm: String,
}

struct Collector {
    /// Reads below the root; `None` when the root cannot be opened (nothing is read).
    host: Option<RootedHost>,
    root: PathBuf,
    live: bool,
    facts: Facts,
    /// The process table, read once when first needed.
    processes: Option<Vec<Process>>,
}

impl Collector {
    /// `abs` (a path on the target, `/proc/meminfo`) under the root.
    fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        under(&self.root, abs.as_ref())
    }

    fn read(&self, abs: impl AsRef<Path>) -> io::Result<String> {
        // ENOENT as the OS says it, so facts read the same whatever the way in.
        let missing = || io::Error::from_raw_os_error(nix::libc::ENOENT);
        let host = self.host.as_ref().ok_or_else(missing)?;
        match host.read_file(abs.as_ref()) {
            Ok(Some(bytes)) => String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Ok(None) => Err(missing()),
            Err(e) => Err(io::Error::other(e.cause)),
        }
    }

    fn exists(&self, abs: impl AsRef<Path>) -> bool {
        // The link itself: a dangling unit symlink still means "enabled".
        self.host.as_ref().is_some_and(|h| matches!(h.metadata(abs.as_ref()), Ok(Some(_))))
    }

    /// Reads `abs`, recording why not under `fact` if it cannot.
    fn read_for(&mut self, fact: &str, abs: &str) -> Option<String> {
        match self.read(abs) {
            Ok(s) => Some(s),
            Err(e) => {
                self.unavailable(fact, format!("cannot read {abs}: {e}"));
                None
            }
        }
    }

    fn unavailable(&mut self, fact: &str, why: String) {
        self.facts.unavailable.entry(fact.to_string()).or_insert(why);
    }

    fn processes(&mut self) -> &[Process] {
        if self.processes.is_none() {
            self.processes = Some(scan_processes(&self.path("/proc")));
        }
        self.processes.as_deref().unwrap_or_default()
    }

    fn kernel(&mut self) {
        let mut release = None;
        if self.live {
            if let Some((rel, machine)) = sys::uname() {
                release = Some(rel);
                self.facts.cpu.arch = Some(machine);
            }
        }
        if release.is_none() {
            release = self.read_for("kernel-release", "/proc/sys/kernel/osrelease").map(|s| s.trim().to_string());
        }
        self.facts.kernel_release = release.filter(|r| !r.is_empty());
    }

    fn cpu(&mut self) {
        if let Some(text) = self.read_for("cpu", "/proc/cpuinfo") {
            let parsed = parse_cpuinfo(&text);
            self.facts.cpu.count = parsed.count;
            self.facts.cpu.flags = parsed.flags;
            self.facts.cpu.model = parsed.model;
            if self.facts.cpu.arch.is_none() {
                self.facts.cpu.arch = parsed.arch;
            }
        }
    }

    fn memory(&mut self) {
        if let Some(text) = self.read_for("memory", "/proc/meminfo") {
            self.facts.memory = parse_meminfo(&text);
            if self.facts.memory.is_none() {
                self.unavailable("memory", "/proc/meminfo has no MemTotal line".into());
            }
        }
    }

    fn swap(&mut self) {
        if let Some(text) = self.read_for("swap", "/proc/swaps") {
            self.facts.swap = Some(parse_swaps(&text));
        }
    }

    fn disk(&mut self, data_dir: &Path) {
        let Some(measured) = nearest_existing(data_dir) else {
            self.unavailable("disk", format!("no existing directory at or above {}", data_dir.display()));
            return;
        };
        match sys::filesystem_space(&measured) {
            Ok((total_bytes, available_bytes)) => {
                self.facts.disk =
                    Some(DiskFacts { data_dir: data_dir.to_path_buf(), measured, total_bytes, available_bytes })
            }
            Err(e) => self.unavailable("disk", e),
        }
    }

    fn cgroup(&mut self) {
        if let Ok(text) = self.read("/sys/fs/cgroup/cgroup.controllers") {
            self.facts.cgroup =
                CgroupFacts { version: Some(CgroupVersion::V2), controllers: sorted(text.split_whitespace()) };
        } else if let Some(text) = self.read_for("cgroup", "/proc/cgroups") {
            self.facts.cgroup =
                CgroupFacts { version: Some(CgroupVersion::V1), controllers: parse_proc_cgroups(&text) };
        }
    }

    fn modules(&mut self, wanted: &[String]) {
        let loaded: HashSet<String> = match self.read("/proc/modules") {
            Ok(text) => text.lines().filter_map(|l| l.split_whitespace().next()).map(normalize_module).collect(),
            Err(e) => {
                self.unavailable("modules-loaded", format!("cannot read /proc/modules: {e}"));
                HashSet::new()
            }
        };
        let modules_dir = self.facts.kernel_release.as_ref().and_then(|rel| {
            ["/lib/modules", "/usr/lib/modules"].iter().map(|base| format!("{base}/{rel}")).find(|d| self.exists(d))
        });
        let (builtin, loadable) = match &modules_dir {
            Some(dir) => (
                self.read(format!("{dir}/modules.builtin")).map(|t| module_names(&t)).unwrap_or_default(),
                self.read(format!("{dir}/modules.dep")).map(|t| module_names(&t)).unwrap_or_default(),
            ),
            None => Default::default(),
        };
        let mut states = BTreeMap::new();
        for name in wanted {
            let key = normalize_module(name);
            let state = if loaded.contains(&key) {
                ModuleState::Loaded
            } else if builtin.contains(&key) || self.exists(format!("/sys/module/{key}")) {
                // /sys/module/<name> without a /proc/modules line is a built-in module.
                ModuleState::Builtin
            } else if loadable.contains(&key) {
                ModuleState::Loadable
            } else {
                ModuleState::Missing
            };
            states.insert(name.clone(), state);
        }
        self.facts.modules = ModuleFacts { modules_dir: modules_dir.map(PathBuf::from), states };
    }

    fn network(&mut self) {
        if let Some(text) = self.read_for("routes", "/proc/net/route") {
            self.facts.network.ipv4_default_routes = parse_route(&text);
        }
        if let Ok(text) = self.read("/proc/net/ipv6_route") {
            self.facts.network.ipv6_default_routes = parse_ipv6_route(&text);
        }

        let addresses = if self.live {
            sys::ipv4_addresses()
        } else {
            self.read("/proc/net/fib_trie")
                .map(|t| {
                    parse_fib_trie(&t)
                        .into_iter()
                        .map(|address| InterfaceAddress { interface: None, address })
                        .collect()
                })
                .map_err(|e| format!("cannot read /proc/net/fib_trie: {e}"))
        };
        match addresses {
            Ok(a) => self.facts.network.ipv4_addresses = a,
            Err(e) => self.unavailable("addresses", e),
        }

        let mut listeners = Vec::new();
        let mut read_any = false;
        for (file, protocol, v6) in [
            ("/proc/net/tcp", Protocol::Tcp, false),
            ("/proc/net/tcp6", Protocol::Tcp, true),
            ("/proc/net/udp", Protocol::Udp, false),
            ("/proc/net/udp6", Protocol::Udp, true),
        ] {
            // tcp6/udp6 are absent when IPv6 is disabled; that is not a gap.
            if let Ok(text) = self.read(file) {
                read_any = true;
                listeners.extend(parse_proc_net(&text, protocol, v6));
            }
        }
        if !read_any {
            self.unavailable("listeners", "cannot read /proc/net/tcp or /proc/net/udp".into());
        }
        let inodes: HashSet<u64> = listeners.iter().map(|l| l.inode).filter(|&i| i != 0).collect();
        if !inodes.is_empty() {
            let proc_dir = self.path("/proc");
            let owners = socket_owners(&proc_dir, self.processes(), &inodes);
            for l in &mut listeners {
                l.process = owners.get(&l.inode).cloned();
            }
        }
        self.facts.network.listeners = listeners;
    }

    fn dns(&mut self, configured: Option<&Path>) {
        let read_resolv = |c: &Collector, abs: &Path| {
            c.read(abs).ok().map(|t| ResolvConf { path: abs.to_path_buf(), nameservers: parse_resolv_conf(&t) })
        };
        self.facts.dns.etc = read_resolv(self, Path::new("/etc/resolv.conf"));
        self.facts.dns.systemd_resolved = read_resolv(self, Path::new("/run/systemd/resolve/resolv.conf"));
        if let Some(p) = configured {
            self.facts.dns.configured_path = Some(p.to_path_buf());
            self.facts.dns.configured = read_resolv(self, p);
        }
    }

    fn hostname(&mut self, timeout: Duration) {
        let name = if self.live { sys::hostname() } else { None }
            .or_else(|| self.read("/proc/sys/kernel/hostname").ok())
            .or_else(|| self.read("/etc/hostname").ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let Some(name) = name else {
            self.unavailable("hostname", "neither gethostname nor /etc/hostname gave a name".into());
            return;
        };
        let hosts_file = self.read("/etc/hosts").map(|t| parse_hosts(&t, &name)).unwrap_or_default();
        // Ask the resolver only when /etc/hosts did not answer: it may wait on DNS.
        let resolver = (self.live && hosts_file.is_empty()).then(|| sys::resolve(&name, timeout));
        self.facts.hostname = HostnameFacts { name: Some(name), hosts_file, resolver };
    }

    fn time(&mut self) {
        if self.live {
            self.facts.time.kernel = sys::kernel_clock();
        }
        self.facts.time.timesyncd_synchronized = self.exists("/run/systemd/timesync/synchronized");
        let daemons: BTreeSet<String> = self
            .processes()
            .iter()
            .filter(|p| matches!(p.comm.as_str(), "chronyd" | "ntpd" | "systemd-timesyn" | "openntpd"))
            .map(|p| p.comm.clone())
            .collect();
        self.facts.time.daemons = daemons.into_iter().collect();
    }

    fn selinux(&mut self) {
        let mode = match self.read("/sys/fs/selinux/enforce").map(|s| s.trim().to_string()).as_deref() {
            Ok("1") => SelinuxMode::Enforcing,
            Ok("0") => SelinuxMode::Permissive,
            _ => SelinuxMode::Disabled,
        };
        let config = self.read("/etc/selinux/config").unwrap_or_default();
        let key = |k: &str| {
            config
                .lines()
                .filter_map(|l| l.trim().strip_prefix(k))
                .map(|v| v.trim().trim_matches('"').to_string())
                // The last assignment wins, as when the file is sourced.
                .next_back()
        };
        let configured_mode = key("SELINUX=");
        let policy_type = key("SELINUXTYPE=");

        let store =
            self.path(format!("/var/lib/selinux/{}/active/modules", policy_type.as_deref().unwrap_or("targeted")));
        let mut modules = BTreeSet::new();
        let mut disabled = BTreeSet::new();
        for prio in dir_names(&store) {
            let names = dir_names(&store.join(&prio));
            if prio == "disabled" {
                disabled.extend(names);
            } else if prio.chars().all(|c| c.is_ascii_digit()) {
                modules.extend(names);
            }
        }
        let modules = modules.difference(&disabled).cloned().collect();

        let pkg_dir = self.path("/usr/share/selinux/packages");
        let mut packaged = BTreeSet::new();
        for entry in dir_names(&pkg_dir) {
            let sub = pkg_dir.join(&entry);
            let files = if sub.is_dir() { dir_names(&sub) } else { vec![entry] };
            packaged.extend(files.iter().filter_map(|f| policy_package_name(f)));
        }
        self.facts.selinux =
            SelinuxFacts { mode, configured_mode, policy_type, modules, packaged: packaged.into_iter().collect() };
    }

    /// `/proc/sys/<key with / for .>`, under the root like every file: a fixture tree
    /// supplies them as files, a target root without them leaves them unknown.
    fn sysctls(&mut self) {
        for key in SYSCTL_KEYS {
            let abs = format!("/proc/sys/{}", key.replace('.', "/"));
            if let Some(v) = self.read_for("sysctls", &abs) {
                self.facts.sysctls.insert(key.to_string(), v.trim().to_string());
            }
        }
    }

    fn hardening(&mut self) {
        let fapolicyd_running = self.processes().iter().any(|p| p.comm == "fapolicyd");
        let usr_local = self.read_for("mounts", "/proc/self/mounts").map(|m| usr_local_mount(&m));
        let fips = self.read("/proc/sys/crypto/fips_enabled").ok().map(|s| s.trim() == "1");
        self.facts.hardening = HardeningFacts { fapolicyd_running, usr_local, fips };
    }

    fn services(&mut self) {
        // The pid file alone can be stale after a crash: only a live process counts.
        let from_pidfile = ["/run/firewalld.pid", "/var/run/firewalld.pid"]
            .iter()
            .filter_map(|f| self.read(f).ok())
            .filter_map(|s| s.trim().parse::<u32>().ok())
            .find(|pid| self.exists(format!("/proc/{pid}")));
        let firewalld_pid =
            from_pidfile.or_else(|| self.processes().iter().find(|p| p.comm == "firewalld").map(|p| p.pid));
        let firewalld_enabled = self.exists("/etc/systemd/system/multi-user.target.wants/firewalld.service");
        let nm_cloud_setup_enabled = [
            "/etc/systemd/system/NetworkManager.service.wants/nm-cloud-setup.service",
            "/etc/systemd/system/timers.target.wants/nm-cloud-setup.timer",
        ]
        .iter()
        .any(|p| self.exists(p));
        self.facts.services = ServiceFacts { firewalld_pid, firewalld_enabled, nm_cloud_setup_enabled };
    }

    fn existing(&mut self) {
        let mut found = Vec::new();
        for d in Distribution::ALL {
            let paths: Vec<PathBuf> = install_markers(d).iter().filter(|p| self.exists(p)).map(PathBuf::from).collect();
            let running: BTreeSet<String> = self
                .processes()
                .iter()
                .filter(|p| distinctive_processes(d).contains(&p.comm.as_str()))
                .map(|p| p.comm.clone())
                .collect();
            if !paths.is_empty() || !running.is_empty() {
                found.push(ExistingInstall { distribution: d, paths, running: running.into_iter().collect() });
            }
        }
        self.facts.existing = found;
        let journal = crate::state::install_journal();
        self.facts.airlock_journal = self.exists(&journal).then_some(journal);
    }

    fn join_token(&mut self, abs: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let real = self.host.as_ref().and_then(|h| h.real_path(abs).ok());
        let meta = real.and_then(|p| fs::metadata(p).ok()).filter(|m| m.is_file());
        self.facts.join_token = Some(JoinTokenFacts {
            path: abs.to_path_buf(),
            present: meta.is_some(),
            size_bytes: meta.as_ref().map_or(0, |m| m.len()),
            mode: meta.map(|m| m.permissions().mode() & 0o7777),
        });
    }

    fn fsync(&mut self, data_dir: &Path, opts: &FsyncProbeOptions) {
        let Some(dir) = nearest_existing(data_dir) else {
            self.facts.fsync = FsyncFacts::Failed {
                dir: data_dir.to_path_buf(),
                error: "no existing directory at or above the data directory".into(),
            };
            return;
        };
        self.facts.fsync = match fsync::probe(&dir, opts) {
            Ok(m) => FsyncFacts::Measured(m),
            Err(e) => FsyncFacts::Failed { dir, error: e.to_string() },
        };
    }
}

/// Where `/usr/local` lives, from `/proc/self/mounts`: the longest mount point that
/// holds it decides whether it is read-only.
pub fn usr_local_mount(mounts: &str) -> UsrLocalMount {
    let target = Path::new("/usr/local");
    let mut best: Option<(usize, bool, bool)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(mnt), Some(_fs), Some(opts)) = (f.next(), f.next(), f.next(), f.next()) else { continue };
        // Octal escapes (`\040` for a space) never occur in the paths compared here.
        let mnt = Path::new(mnt);
        if !target.starts_with(mnt) {
            continue;
        }
        let depth = mnt.components().count();
        let ro = opts.split(',').any(|o| o == "ro");
        // A later mount over the same point hides the earlier one.
        if best.is_none_or(|(d, _, _)| depth >= d) {
            best = Some((depth, mnt == target, ro));
        }
    }
    let (_, mount_point, read_only) = best.unwrap_or((0, false, false));
    UsrLocalMount { mount_point, read_only }
}

/// Files whose presence means the distribution is (or was) installed. Config files
/// alone are not here: an operator may pre-seed `/etc/rancher/k3s/config.yaml`.
fn install_markers(d: Distribution) -> &'static [&'static str] {
    match d {
        Distribution::K3s => &[
            "/usr/local/bin/k3s",
            "/usr/bin/k3s",
            "/etc/systemd/system/k3s.service",
            "/etc/systemd/system/k3s-agent.service",
            "/etc/rancher/k3s/k3s.yaml",
            "/var/lib/rancher/k3s/server/db",
            "/var/lib/rancher/k3s/server/token",
            "/var/lib/rancher/k3s/agent/etc",
        ],
        Distribution::Rke2 => &[
            "/usr/local/bin/rke2",
            "/opt/rke2/bin/rke2",
            "/usr/bin/rke2",
            "/etc/systemd/system/rke2-server.service",
            "/etc/systemd/system/rke2-agent.service",
            "/usr/local/lib/systemd/system/rke2-server.service",
            "/usr/local/lib/systemd/system/rke2-agent.service",
            "/usr/lib/systemd/system/rke2-server.service",
            "/etc/rancher/rke2/rke2.yaml",
            "/var/lib/rancher/rke2/server/db",
            "/var/lib/rancher/rke2/server/token",
            "/var/lib/rancher/rke2/agent/etc",
        ],
    }
}

/// Process names that can only be this distribution (containerd or etcd could be
/// anyone's).
fn distinctive_processes(d: Distribution) -> &'static [&'static str] {
    match d {
        Distribution::K3s => &["k3s", "k3s-server", "k3s-agent"],
        Distribution::Rke2 => &["rke2"],
    }
}

/// `abs` under `root`, whatever leading slashes it has.
pub(crate) fn under(root: &Path, abs: &Path) -> PathBuf {
    let rel = abs.strip_prefix("/").unwrap_or(abs);
    root.join(rel)
}

/// `path` or its nearest existing ancestor.
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| !p.as_os_str().is_empty() && p.is_dir()).map(Path::to_path_buf)
}

fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<String> = rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn sorted<'a>(it: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<String> = it.map(str::to_string).collect();
    set.into_iter().collect()
}

fn scan_processes(proc_dir: &Path) -> Vec<Process> {
    let mut out = Vec::new();
    for name in dir_names(proc_dir) {
        let Ok(pid) = name.parse::<u32>() else { continue };
        if let Ok(comm) = fs::read_to_string(proc_dir.join(&name).join("comm")) {
            out.push(Process { pid, comm: comm.trim_end_matches('\n').to_string() });
        }
    }
    out
}

/// Socket inode → `comm` of a process holding it, from `/proc/<pid>/fd/*` links
/// (`socket:[12345]`). Needs root to see other users' processes; what cannot be read
/// stays unknown.
fn socket_owners(proc_dir: &Path, processes: &[Process], wanted: &HashSet<u64>) -> HashMap<u64, String> {
    let mut owners = HashMap::new();
    for p in processes {
        let Ok(rd) = fs::read_dir(proc_dir.join(p.pid.to_string()).join("fd")) else { continue };
        for entry in rd.filter_map(|e| e.ok()) {
            let Ok(target) = fs::read_link(entry.path()) else { continue };
            let target = target.to_string_lossy();
            let inode = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse().ok());
            if let Some(inode) = inode.filter(|i| wanted.contains(i)) {
                owners.entry(inode).or_insert_with(|| p.comm.clone());
            }
        }
    }
    owners
}

pub(crate) fn parse_cpuinfo(text: &str) -> CpuFacts {
    let mut count = 0u32;
    let mut flags = None;
    let mut model = None;
    let (mut x86, mut arm) = (false, false);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => count += 1,
            "flags" | "Features" if flags.is_none() => {
                flags = Some(value.split_whitespace().map(str::to_string).collect::<Vec<_>>());
                x86 |= key == "flags";
            }
            "model name" if model.is_none() => model = Some(value.to_string()),
            "vendor_id" => x86 = true,
            "CPU implementer" => arm = true,
            _ => {}
        }
    }
    let arch = if x86 {
        Some("x86_64".to_string())
    } else if arm {
        Some("aarch64".to_string())
    } else {
        None
    };
    CpuFacts { arch, count: (count > 0).then_some(count), flags: flags.unwrap_or_default(), model }
}

pub(crate) fn parse_meminfo(text: &str) -> Option<MemoryFacts> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next()?.parse::<u64>().ok())
    };
    Some(MemoryFacts { total_kib: field("MemTotal:")?, available_kib: field("MemAvailable:") })
}

pub(crate) fn parse_swaps(text: &str) -> Vec<SwapArea> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 {
                return None;
            }
            Some(SwapArea {
                name: f[0].to_string(),
                kind: f[1].to_string(),
                size_kib: f[2].parse().ok()?,
                used_kib: f[3].parse().ok()?,
            })
        })
        .collect()
}

pub(crate) fn parse_proc_cgroups(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == "1").then(|| f[0].to_string())
        })
        .collect();
    v.sort();
    v
}

/// Kernel module names use `_`; file names and user input may use `-`.
fn normalize_module(name: &str) -> String {
    name.replace('-', "_")
}

/// Module names from `modules.builtin` / `modules.dep` (`kernel/fs/overlayfs/overlay.ko.zst: …`).
fn module_names(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| {
            let path = l.split(':').next()?.trim();
            let file = path.rsplit('/').next()?;
            let stem = file.split(".ko").next()?;
            (!stem.is_empty()).then(|| normalize_module(stem))
        })
        .collect()
}

const RTF_UP: u32 = 0x0001;
const RTF_GATEWAY: u32 = 0x0002;
const RTF_REJECT: u32 = 0x0200;

/// IPv4 default routes from `/proc/net/route`. Addresses there are the in-memory
/// (network order) bytes printed as a host-order integer, hence `to_ne_bytes`.
pub(crate) fn parse_route(text: &str) -> Vec<DefaultRoute> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            let (dest, gateway, flags, mask) = (hex(f[1])?, hex(f[2])?, hex(f[3])?, hex(f[7])?);
            if dest != 0 || mask != 0 || flags & RTF_UP == 0 {
                return None;
            }
            let gateway = (flags & RTF_GATEWAY != 0).then(|| IpAddr::V4(Ipv4Addr::from(gateway.to_ne_bytes())));
            Some(DefaultRoute { interface: f[0].to_string(), gateway, metric: f[6].parse().unwrap_or(0) })
        })
        .collect()
}

/// IPv6 default routes from `/proc/net/ipv6_route`, leaving out the kernel's reject
/// routes on `lo` that every host has.
pub(crate) fn parse_ipv6_route(text: &str) -> Vec<DefaultRoute> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            let is_default = f[0].bytes().all(|b| b == b'0') && f[1] == "00";
            if !is_default || f[9] == "lo" || flags & RTF_REJECT != 0 || flags & RTF_UP == 0 {
                return None;
            }
            let gateway =
                u128::from_str_radix(f[4], 16).ok().filter(|&g| g != 0).map(|g| IpAddr::V6(Ipv6Addr::from(g)));
            Some(DefaultRoute {
                interface: f[9].to_string(),
                gateway,
                metric: u32::from_str_radix(f[5], 16).unwrap_or(0),
            })
        })
        .collect()
}

/// Local IPv4 addresses from `/proc/net/fib_trie`: each `|-- a.b.c.d` line followed by
/// `/32 host LOCAL` is an address of this host. The trie lists each twice (main and
/// local tables), hence the set.
pub(crate) fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut last = None;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.trim().parse::<Ipv4Addr>().ok();
        } else if t.starts_with("/32 host LOCAL") {
            out.extend(last);
        }
    }
    out.into_iter().collect()
}

const TCP_LISTEN: &str = "0A";
const UDP_UNCONNECTED: &str = "07";

/// Bound sockets from `/proc/net/{tcp,udp}{,6}`: TCP listeners and unconnected UDP
/// sockets. Addresses are 32-bit words in host order, hence `to_ne_bytes`.
pub(crate) fn parse_proc_net(text: &str, protocol: Protocol, v6: bool) -> Vec<Listener> {
    let wanted = match protocol {
        Protocol::Tcp => TCP_LISTEN,
        Protocol::Udp => UDP_UNCONNECTED,
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || !f[3].eq_ignore_ascii_case(wanted) {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let address = if v6 {
                if addr.len() != 32 {
                    return None;
                }
                let mut bytes = [0u8; 16];
                for i in 0..4 {
                    let word = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                    bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            } else {
                IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(addr, 16).ok()?.to_ne_bytes()))
            };
            Some(Listener { protocol, address, port, inode: f[9].parse().ok()?, process: None })
        })
        .collect()
}

pub(crate) fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "nameserver").then_some(())?;
            // Link-local IPv6 servers carry a zone (`fe80::1%eth0`).
            f.next()?.split('%').next()?.parse().ok()
        })
        .collect()
}

/// Addresses `/etc/hosts` gives `name` (case-insensitive, aliases included).
pub(crate) fn parse_hosts(text: &str, name: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?;
            let mut f = l.split_whitespace();
            let ip: IpAddr = f.next()?.split('%').next()?.parse().ok()?;
            f.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect()
}

/// `k3s.pp`, `container.pp.bz2`, `rke2.cil` → the module name.
fn policy_package_name(file: &str) -> Option<String> {
    [".pp.bz2", ".pp", ".cil.bz2", ".cil"].iter().find_map(|ext| file.strip_suffix(ext)).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_counts_processors_and_reads_x86_flags() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: fpu sse4_2 popcnt\n\n\
                    processor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu\n";
        let c = parse_cpuinfo(text);
        assert_eq!(c.count, Some(2));
        assert_eq!(c.flags, ["fpu", "sse4_2", "popcnt"]);
        assert_eq!(c.arch.as_deref(), Some("x86_64"));
        assert_eq!(c.model.as_deref(), Some("Xeon"));
    }

    #[test]
    fn cpuinfo_recognises_arm() {
        let c = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n");
        assert_eq!(c.arch.as_deref(), Some("aarch64"));
        assert_eq!(c.flags, ["fp", "asimd"]);
    }

    #[test]
    fn meminfo_reads_total_and_available() {
        let m = parse_meminfo("MemTotal:       16303428 kB\nMemFree: 1 kB\nMemAvailable:   9000000 kB\n").unwrap();
        assert_eq!((m.total_kib, m.available_kib), (16303428, Some(9000000)));
        assert!(parse_meminfo("MemFree: 1 kB\n").is_none());
    }

    #[test]
    fn swaps_skip_the_header() {
        let s = parse_swaps(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/swap.img  file  2097148  0  -2\n/dev/zram0 partition 8388604 12 100\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "/swap.img");
        assert_eq!(s[1].used_kib, 12);
        assert!(parse_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    #[test]
    fn proc_cgroups_lists_enabled_controllers() {
        let c = parse_proc_cgroups(
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t1\t1\nmemory\t0\t1\t0\n",
        );
        assert_eq!(c, ["cpu", "cpuset"]);
    }

    #[test]
    fn module_names_come_from_paths_with_any_compression() {
        let n = module_names(
            "kernel/fs/overlayfs/overlay.ko.zst: kernel/fs/x.ko\nkernel/net/bridge/br_netfilter.ko.xz:\nkernel/drivers/a-b.ko\n",
        );
        assert!(n.contains("overlay") && n.contains("br_netfilter") && n.contains("a_b"));
    }

    #[test]
    fn default_route_and_gateway_decode() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    dummy0\t00000000\t00000000\t0001\t0\t0\t1000\t00000000\t0\t0\t0\n";
        let r = parse_route(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r[0].metric, 100);
        assert_eq!((r[1].interface.as_str(), r[1].gateway), ("dummy0", None));
        let no_default = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                          eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert!(parse_route(no_default).is_empty());
    }

    #[test]
    fn ipv6_default_ignores_lo_reject_routes() {
        let text = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
                    00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n";
        let r = parse_ipv6_route(text);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(r[0].metric, 0x400);
    }

    #[test]
    fn fib_trie_yields_local_addresses_once() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    \x20          |-- 127.0.0.1\n              /32 host LOCAL\n\
                    \x20       |-- 192.0.2.255\n           /32 link BROADCAST\n\
                    \x20          |-- 192.0.2.2\n              /32 host LOCAL\n\
                    Local:\n           |-- 192.0.2.2\n              /32 host LOCAL\n";
        let a = parse_fib_trie(text);
        assert_eq!(a, ["127.0.0.1".parse::<Ipv4Addr>().unwrap(), "192.0.2.2".parse().unwrap()]);
    }

    #[test]
    fn proc_net_tcp_finds_listeners_v4_and_v6() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  \x20  0: 00000000:192B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
                  \x20  1: 0100007F:0016 0200007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0 100 0 0 10 0\n";
        let l = parse_proc_net(v4, Protocol::Tcp, false);
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].port, l[0].inode, l[0].address), (6443, 4242, "0.0.0.0".parse().unwrap()));

        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  \x20  0: 00000000000000000000000001000000:094B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0\n";
        let l = parse_proc_net(v6, Protocol::Tcp, true);
        assert_eq!((l[0].port, l[0].address), (2379, "::1".parse().unwrap()));

        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                   \x20 1: 00000000:2118 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 0 2 0 0\n";
        let l = parse_proc_net(udp, Protocol::Udp, false);
        assert_eq!((l[0].port, l[0].inode, l[0].protocol), (8472, 0, Protocol::Udp));
    }

    #[test]
    fn resolv_conf_and_hosts_parse() {
        let ns =
            parse_resolv_conf("# c\nsearch example\nnameserver 127.0.0.53\nnameserver\tfe80::1%eth0\noptions edns0\n");
        assert_eq!(ns, ["127.0.0.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]);
        let hosts = "127.0.0.1 localhost\n10.0.0.5 node1.example.com Node1 # the node\n::1 localhost\n";
        assert_eq!(parse_hosts(hosts, "node1"), ["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert!(parse_hosts(hosts, "node2").is_empty());
    }

    #[test]
    fn policy_package_names_strip_extensions() {
        assert_eq!(policy_package_name("container.pp.bz2").as_deref(), Some("container"));
        assert_eq!(policy_package_name("k3s.pp").as_deref(), Some("k3s"));
        assert_eq!(policy_package_name("README"), None);
    }

    #[test]
    fn distribution_usr_local_read_only_or_a_mount_point_is_told_from_the_mounts() {
        let root = "/dev/sda1 / xfs rw,relatime 0 0\n";
        assert_eq!(usr_local_mount(root), UsrLocalMount { mount_point: false, read_only: false });
        let ro_usr = format!("{root}/dev/sda2 /usr xfs ro,relatime 0 0\n");
        assert_eq!(usr_local_mount(&ro_usr), UsrLocalMount { mount_point: false, read_only: true });
        let own = format!("{ro_usr}/dev/sda3 /usr/local xfs rw,nodev 0 0\n");
        assert_eq!(usr_local_mount(&own), UsrLocalMount { mount_point: true, read_only: false });
        let other = format!("{root}/dev/sda4 /usr/local2 xfs ro 0 0\n");
        assert_eq!(usr_local_mount(&other), UsrLocalMount::default());
    }

    #[test]
    fn under_keeps_paths_inside_the_root() {
        assert_eq!(under(Path::new("/tmp/r"), Path::new("/proc/meminfo")), PathBuf::from("/tmp/r/proc/meminfo"));
        assert_eq!(under(Path::new("/"), Path::new("/proc/meminfo")), PathBuf::from("/proc/meminfo"));
    }
}
