//! The checks: pure functions of (facts, thresholds, mode).
//!
//! Each says pass, warn or fail, what it measured, and for anything short of pass the
//! concrete fix. A fact the collector could not gather makes its check warn and say
//! what would tell (never guess a pass). The ids are stable: operators name them in
//! overrides and the journal records them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use super::facts::*;
use super::thresholds::{Distribution, KernelVersion, PortRange, SelinuxPolicy, Thresholds};
use super::{Mode, Status};

/// What one check concluded, before the id and title are attached.
pub(crate) struct Outcome {
    pub status: Status,
    pub detail: String,
    pub hint: Option<String>,
}

fn pass(detail: impl Into<String>) -> Option<Outcome> {
    Some(Outcome { status: Status::Pass, detail: detail.into(), hint: None })
}
fn warn(detail: impl Into<String>, hint: impl Into<String>) -> Option<Outcome> {
    Some(Outcome { status: Status::Warn, detail: detail.into(), hint: Some(hint.into()) })
}
fn fail(detail: impl Into<String>, hint: impl Into<String>) -> Option<Outcome> {
    Some(Outcome { status: Status::Fail, detail: detail.into(), hint: Some(hint.into()) })
}
fn skipped(detail: impl Into<String>) -> Option<Outcome> {
    Some(Outcome { status: Status::Skipped, detail: detail.into(), hint: None })
}

/// A fact the collector could not gather: warn, saying why and what would tell. In a
/// target root (not the live host) a tree without `/proc` cannot tell, and the node it
/// is meant for is checked when `airlock preflight` runs there: skipped, not a warning.
fn unknown(facts: &Facts, fact: &str, what: &str, instead: &str) -> Option<Outcome> {
    let why = facts.why_unavailable(fact).unwrap_or("the collector found nothing");
    if !facts.live {
        return skipped(format!(
            "not in target root {}: {why}; run `airlock preflight` on the node to check {what}",
            facts.root.display()
        ));
    }
    warn(format!("cannot tell {what}: {why}"), format!("check by hand: {instead}"))
}

type CheckFn = fn(&Facts, &Thresholds, Mode) -> Option<Outcome>;

/// One check: its stable id, a title for the report, and the function. The function
/// returns `None` when the check does not apply in that mode.
pub(crate) struct CheckDef {
    pub id: &'static str,
    pub title: &'static str,
    pub run: CheckFn,
}

/// Every check, in report order.
pub(crate) const CHECKS: &[CheckDef] = &[
    CheckDef { id: "cpu-count", title: "CPU count", run: cpu_count },
    CheckDef { id: "cpu-x86-64-v2", title: "CPU instruction set (x86-64-v2)", run: cpu_x86_64_v2 },
    CheckDef { id: "memory", title: "Memory", run: memory },
    CheckDef { id: "disk-space", title: "Free disk in the data directory", run: disk_space },
    CheckDef { id: "kernel-version", title: "Kernel version", run: kernel_version },
    CheckDef { id: "cgroup-controllers", title: "cgroup controllers", run: cgroup_controllers },
    CheckDef { id: "kernel-modules", title: "Kernel modules", run: kernel_modules },
    CheckDef { id: "swap", title: "Swap", run: swap },
    CheckDef { id: "default-route", title: "Default route", run: default_route },
    CheckDef { id: "ipv4-address", title: "IPv4 address", run: ipv4_address },
    CheckDef { id: "time-sync", title: "Clock synchronisation (NTP)", run: time_sync },
    CheckDef { id: "hostname", title: "Hostname", run: hostname },
    CheckDef { id: "nameserver", title: "DNS nameserver", run: nameserver },
    CheckDef { id: "ports", title: "Ports free", run: ports },
    CheckDef { id: "selinux", title: "SELinux and policy packages", run: selinux },
    CheckDef { id: "cis-sysctls", title: "Kernel settings for the CIS profile", run: cis_sysctls },
    CheckDef { id: "fapolicyd", title: "fapolicyd (application allowlisting)", run: fapolicyd },
    CheckDef { id: "usr-local", title: "/usr/local writable", run: usr_local },
    CheckDef { id: "fips", title: "FIPS mode", run: fips },
    CheckDef { id: "firewalld", title: "firewalld", run: firewalld },
    CheckDef { id: "nm-cloud-setup", title: "nm-cloud-setup", run: nm_cloud_setup },
    CheckDef { id: "existing-install", title: "Existing K3s/RKE2 install", run: existing_install },
    CheckDef { id: "etcd-fsync", title: "Disk sync latency for etcd", run: etcd_fsync },
    CheckDef { id: "join-token", title: "Join token file", run: join_token },
    CheckDef { id: "join-server-reachable", title: "Server reachable for join", run: join_server_reachable },
];

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn cpu_count(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let Some(n) = f.cpu.count else {
        return unknown(f, "cpu", "the CPU count", "`nproc`");
    };
    let min = t.min_cpus;
    if n < min {
        return fail(
            format!("{n} CPUs; the profile needs at least {min}"),
            format!(
                "give the machine at least {min} CPUs (a VM: raise its vCPU count and reboot), or install a profile \
                 sized for this host"
            ),
        );
    }
    match t.recommended_cpus {
        Some(rec) if n < rec => warn(
            format!("{n} CPUs: enough to install (minimum {min}), fewer than the {rec} recommended for the platform"),
            format!(
                "give the machine {rec} CPUs before production use; expect slow chart installs and upgrades until then"
            ),
        ),
        _ => pass(format!("{n} CPUs (minimum {min})")),
    }
}

/// The x86-64-v2 microarchitecture level as `/proc/cpuinfo` spells its flags
/// (`pni` is SSE3).
const X86_64_V2_FLAGS: [&str; 7] = ["cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"];

fn cpu_x86_64_v2(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    if !t.require_x86_64_v2 {
        return pass("not required by this profile");
    }
    let Some(arch) = f.cpu.arch.as_deref() else {
        return unknown(f, "cpu", "the CPU architecture", "`uname -m` and `grep -w sse4_2 /proc/cpuinfo`");
    };
    if arch != "x86_64" {
        return pass(format!("{arch}: the x86-64-v2 level applies to x86_64 only"));
    }
    if f.cpu.flags.is_empty() {
        return unknown(f, "cpu", "the CPU flags", "`grep -m1 ^flags /proc/cpuinfo`");
    }
    let missing: Vec<&str> =
        X86_64_V2_FLAGS.iter().copied().filter(|fl| !f.cpu.flags.iter().any(|h| h == fl)).collect();
    if missing.is_empty() {
        return pass("x86-64-v2 (cx16, lahf_lm, popcnt, sse3, sse4_1, sse4_2, ssse3 present)");
    }
    let model = f.cpu.model.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
    fail(
        format!(
            "the CPU{model} lacks {}: it is below x86-64-v2, and images built on RHEL 9/UBI 9 (Keycloak's among them) \
             abort with \"CPU does not support x86-64-v2\"",
            missing.join(", ")
        ),
        "on a VM, expose the host CPU model (libvirt `<cpu mode='host-passthrough'/>`, Proxmox CPU type `host` or \
         `x86-64-v2-AES`, VMware EVC baseline Nehalem or later) and power-cycle it; hardware older than Nehalem \
         cannot run this platform",
    )
}

fn memory(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let Some(m) = &f.memory else {
        return unknown(f, "memory", "the memory size", "`grep MemTotal /proc/meminfo`");
    };
    let mib = m.total_kib / 1024;
    // MemTotal is what the kernel manages: installed RAM minus firmware and
    // crashkernel reservations, several percent less. Allow 10% so a "4 GiB" VM
    // passes a 4096 MiB minimum.
    let allowed = |want: u64| mib * 10 >= want * 9;
    let min = t.min_memory_mib;
    if !allowed(min) {
        return fail(
            format!("{mib} MiB of memory; the profile needs at least {min} MiB"),
            format!(
                "give the machine at least {} GiB of RAM, or install a profile sized for this host",
                min.div_ceil(1024)
            ),
        );
    }
    match t.recommended_memory_mib {
        Some(rec) if !allowed(rec) => warn(
            format!("{mib} MiB of memory: enough to install (minimum {min} MiB), less than the {rec} MiB recommended"),
            format!(
                "give the machine {} GiB of RAM before production use; pods may be evicted under load until then",
                rec.div_ceil(1024)
            ),
        ),
        _ => pass(format!("{mib} MiB of memory (minimum {min} MiB)")),
    }
}

/// The kubelet's default `imageGCHighThresholdPercent`: above it, images are deleted.
const IMAGE_GC_HIGH_PERCENT: u64 = 85;

fn disk_space(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let Some(d) = &f.disk else {
        return unknown(f, "disk", "the free space", "`df -h <data dir>`");
    };
    let need = t.min_free_disk_bytes;
    let place = if d.measured == d.data_dir {
        format!("{}", d.data_dir.display())
    } else {
        format!("{} (measured at {}, which exists)", d.data_dir.display(), d.measured.display())
    };
    let fix = "free space there (`journalctl --vacuum-size=500M`, old bundles and backups), grow the filesystem \
               (`lvextend -r -L +<size> <volume>`), or choose a data directory on a larger filesystem";
    if d.available_bytes < need {
        return fail(
            format!(
                "{} free for {place}; the bundle needs {} (bundle size × headroom)",
                gib(d.available_bytes),
                gib(need)
            ),
            fix,
        );
    }
    if let Some(rec) = t.recommended_free_disk_bytes.filter(|&rec| d.available_bytes < rec) {
        return warn(
            format!(
                "{} free for {place}: enough for the bundle ({}), less than the {} the profile is sized for",
                gib(d.available_bytes),
                gib(need),
                gib(rec)
            ),
            format!("{fix}; later bundles and logs need the room"),
        );
    }
    if d.total_bytes > 0 {
        let used_after = d.total_bytes.saturating_sub(d.available_bytes).saturating_add(need);
        let percent = used_after.saturating_mul(100) / d.total_bytes;
        if percent >= IMAGE_GC_HIGH_PERCENT {
            return warn(
                format!(
                    "{} free for {place}, enough for the bundle ({}), but the filesystem would then be {percent}% full: \
                     at {IMAGE_GC_HIGH_PERCENT}% the kubelet garbage-collects images, which an air-gapped node \
                     cannot pull again (k3s#1552)",
                    gib(d.available_bytes),
                    gib(need)
                ),
                fix,
            );
        }
    }
    pass(format!("{} free for {place} (needs {})", gib(d.available_bytes), gib(need)))
}

fn kernel_version(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let Some(release) = &f.kernel_release else {
        return unknown(f, "kernel-release", "the kernel version", "`uname -r`");
    };
    let min = t.min_kernel;
    match release.parse::<KernelVersion>() {
        Err(_) => warn(
            format!("cannot read a version from the kernel release `{release}`"),
            format!("check by hand that `uname -r` is {min} or newer"),
        ),
        Ok(v) if v < min => fail(
            format!("kernel {release}; {} needs {min} or newer", t.distribution),
            format!(
                "install and boot the distribution's current kernel (at least {min}) from the offline media, then run \
                 preflight again"
            ),
        ),
        Ok(_) => pass(format!("kernel {release} (minimum {min})")),
    }
}

fn cgroup_controllers(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let Some(version) = f.cgroup.version else {
        return unknown(
            f,
            "cgroup",
            "the cgroup controllers",
            "`cat /sys/fs/cgroup/cgroup.controllers` or `/proc/cgroups`",
        );
    };
    let v = match version {
        CgroupVersion::V1 => "v1",
        CgroupVersion::V2 => "v2",
    };
    let missing: Vec<&str> = t
        .required_cgroup_controllers
        .iter()
        .map(String::as_str)
        .filter(|c| !f.cgroup.controllers.iter().any(|h| h == c))
        .collect();
    if !missing.is_empty() {
        let mut hint = String::new();
        if missing.contains(&"memory") {
            // The usual cause: Raspberry Pi OS and some ARM boards ship cgroup_disable=memory.
            hint.push_str(
                "add `cgroup_enable=memory cgroup_memory=1` to the kernel command line (GRUB: \
                 `grubby --update-kernel=ALL --args=\"cgroup_enable=memory cgroup_memory=1\"`; Raspberry Pi: \
                 /boot/firmware/cmdline.txt) and reboot",
            );
        } else {
            hint.push_str("enable them on the kernel command line (remove any `cgroup_disable=` argument) and reboot");
        }
        return fail(format!("cgroup {v} lacks the controllers {}", missing.join(", ")), hint);
    }
    let have = t.required_cgroup_controllers.join(", ");
    if version == CgroupVersion::V1 {
        return warn(
            format!(
                "cgroup v1 with {have}: works today, but Kubernetes keeps cgroup v1 in maintenance only since 1.31 and \
                 is removing it"
            ),
            "boot with cgroup v2 before a later upgrade needs it: `grubby --update-kernel=ALL \
             --args=systemd.unified_cgroup_hierarchy=1` and reboot",
        );
    }
    pass(format!("cgroup v2 with {have}"))
}

fn kernel_modules(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let mut ok = Vec::new();
    let mut unknown_ = Vec::new();
    let mut missing = Vec::new();
    for name in &t.required_modules {
        match f.modules.states.get(name) {
            Some(ModuleState::Loaded) => ok.push(format!("{name} (loaded)")),
            Some(ModuleState::Builtin) => ok.push(format!("{name} (built in)")),
            // The K3s and RKE2 units run `modprobe br_netfilter` / `overlay` before starting.
            Some(ModuleState::Loadable) => ok.push(format!("{name} (loadable; the {} unit loads it)", t.distribution)),
            Some(ModuleState::Missing) if f.modules.modules_dir.is_some() => missing.push(name.as_str()),
            Some(ModuleState::Missing) | None => unknown_.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        let dir = f.modules.modules_dir.as_deref().map(|d| d.display().to_string()).unwrap_or_default();
        return fail(
            format!("not loaded, not built in and not in {dir}: {}", missing.join(", ")),
            format!(
                "install the package with the modules of the running kernel from the offline media (RHEL: \
                 kernel-modules-core / kernel-modules; Ubuntu: linux-modules-extra-$(uname -r); SLES: kernel-default), \
                 then `modprobe {m}` and list it in /etc/modules-load.d/airlock.conf",
                m = missing.join(" && modprobe ")
            ),
        );
    }
    if !unknown_.is_empty() {
        let why = match f.modules.modules_dir {
            None => "there is no /lib/modules/<release> to look in (inside a container, the host must load them)",
            Some(_) => "the collector did not look them up",
        };
        return warn(
            format!("cannot tell whether {} can be loaded: {why}", unknown_.join(", ")),
            format!("check by hand: `modprobe -n -v {}`", unknown_.join(" ")),
        );
    }
    pass(ok.join(", "))
}

fn swap(f: &Facts, _: &Thresholds, _: Mode) -> Option<Outcome> {
    let Some(areas) = &f.swap else {
        return unknown(f, "swap", "whether swap is on", "`swapon --show`");
    };
    if areas.is_empty() {
        return pass("no active swap");
    }
    let list: Vec<String> =
        areas.iter().map(|a| format!("{} ({}, {} MiB)", a.name, a.kind, a.size_kib / 1024)).collect();
    // A warning, not a failure: K3s and RKE2 start the kubelet with fail-swap-on=false,
    // so the install works; what suffers is memory accounting and etcd latency.
    warn(
        format!(
            "swap is on: {}. K3s/RKE2 run with it, but pod memory limits and evictions do not account for swap and a \
             swapping etcd misses its heartbeats",
            list.join(", ")
        ),
        "`swapoff -a`, then comment out the swap lines in /etc/fstab so it stays off after a reboot (zram: remove \
         zram-generator-defaults or write an empty /etc/systemd/zram-generator.conf)",
    )
}

fn is_usable_ipv4(a: Ipv4Addr) -> bool {
    !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}

const DEFAULT_ROUTE_HINT: &str = "if the site has a gateway: `ip route add default via <gateway>` and make it \
    persistent in the network configuration; if the network has none (k3s#1144), add a dummy interface with a \
    low-priority default route: `ip link add dummy0 type dummy && ip link set dummy0 up && ip addr add \
    203.0.113.254/31 dev dummy0 && ip route add default via 203.0.113.255 dev dummy0 metric 1000` (persist it, e.g. \
    `nmcli connection add type dummy ifname dummy0 ipv4.method manual ipv4.addresses 203.0.113.254/31 \
    ipv4.gateway 203.0.113.255 ipv4.route-metric 1000`) and set `node-ip` to the address on the cluster network";

fn default_route(f: &Facts, _: &Thresholds, _: Mode) -> Option<Outcome> {
    if f.why_unavailable("routes").is_some() {
        return unknown(f, "routes", "whether there is a default route", "`ip route show default`");
    }
    let net = &f.network;
    let Some(route) = net.ipv4_default_routes.iter().min_by_key(|r| r.metric) else {
        let v6 = match net.ipv6_default_routes.first() {
            Some(r) => {
                format!(" (there is an IPv6 default route on {}, but the cluster networks are IPv4)", r.interface)
            }
            None => String::new(),
        };
        return fail(
            format!(
                "no IPv4 default route in /proc/net/route{v6}: K3s/RKE2 pick the node IP from the default route and \
                 kube-proxy needs one for ClusterIP traffic"
            ),
            DEFAULT_ROUTE_HINT,
        );
    };
    let via = match route.gateway {
        Some(g) => format!("via {g} dev {}", route.interface),
        None => format!("dev {}", route.interface),
    };
    // K3s takes the node IP from the default route's interface and rejects
    // non-global addresses (k3s#7865): a dummy route on 169.254/16 does not help.
    let on_iface: Vec<Ipv4Addr> = net
        .ipv4_addresses
        .iter()
        .filter(|a| a.interface.as_deref() == Some(&route.interface))
        .map(|a| a.address)
        .collect();
    if !on_iface.is_empty() && !on_iface.iter().any(|a| is_usable_ipv4(*a)) {
        return warn(
            format!(
                "default route {via}, but {} has only link-local or loopback addresses ({}), from which the node IP \
                 cannot be chosen (k3s#7865)",
                route.interface,
                join(&on_iface)
            ),
            "give the default-route interface a routable address (the k3s#1144 dummy uses 203.0.113.254/31), or set \
             `node-ip` to the address on the cluster network",
        );
    }
    pass(format!("default route {via}"))
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn ipv4_address(f: &Facts, _: &Thresholds, _: Mode) -> Option<Outcome> {
    if f.why_unavailable("addresses").is_some() {
        return unknown(f, "addresses", "the IPv4 addresses", "`ip -4 addr`");
    }
    let describe = |a: &InterfaceAddress| match &a.interface {
        Some(i) => format!("{} ({i})", a.address),
        None => a.address.to_string(),
    };
    let usable: Vec<String> =
        f.network.ipv4_addresses.iter().filter(|a| is_usable_ipv4(a.address)).map(describe).collect();
    if !usable.is_empty() {
        return pass(usable.join(", "));
    }
    let link_local: Vec<String> =
        f.network.ipv4_addresses.iter().filter(|a| a.address.is_link_local()).map(describe).collect();
    let what = if link_local.is_empty() {
        "no IPv4 address besides loopback".to_string()
    } else {
        format!("only link-local IPv4 addresses ({}), which cannot be a node IP", link_local.join(", "))
    };
    fail(
        what,
        "configure a static IPv4 address on the cluster network (`nmcli connection modify <conn> ipv4.method manual \
         ipv4.addresses <ip>/<prefix>` or the netplan/wicked equivalent) and bring the interface up",
    )
}

fn time_sync(f: &Facts, _: &Thresholds, _: Mode) -> Option<Outcome> {
    let t = &f.time;
    let daemons = if t.daemons.is_empty() { "none".to_string() } else { t.daemons.join(", ") };
    let hint = "point chrony at a time source inside the site (`server <ntp-host> iburst` in /etc/chrony.conf, then \
                `systemctl enable --now chronyd`; `chronyc tracking` shows the state). Nodes of one cluster must agree \
                on time for etcd and certificate validity";
    match t.kernel {
        Some(k) if k.synchronized => {
            pass(format!("kernel clock synchronised (estimated error {} µs; time daemons: {daemons})", k.est_error_us))
        }
        _ if t.timesyncd_synchronized => pass("systemd-timesyncd reports the clock synchronised"),
        // Unsynchronised is a warning: the clock may still be right, and a single node
        // on a site without any time source is a legitimate install.
        Some(_) => warn(format!("the kernel clock is not synchronised (time daemons running: {daemons})"), hint),
        None => warn(
            format!(
                "cannot tell whether the clock is synchronised without asking the kernel or running `chronyc tracking` \
                 / `timedatectl` (time daemons running: {daemons})"
            ),
            hint,
        ),
    }
}

/// RFC 1123 subdomain, as Kubernetes requires of node names (after the kubelet
/// lowercases the hostname).
fn valid_node_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn hostname(f: &Facts, _: &Thresholds, mode: Mode) -> Option<Outcome> {
    let h = &f.hostname;
    let Some(name) = &h.name else {
        return unknown(f, "hostname", "the hostname", "`hostname`");
    };
    let rename = "`hostnamectl set-hostname <name>` (lowercase letters, digits, `-` and `.`), or set `node-name` in \
                  the answers";
    if !valid_node_name(name) {
        return fail(
            format!("hostname `{name}` is not a valid Kubernetes node name (RFC 1123), and K3s/RKE2 use it as one"),
            rename,
        );
    }
    if name.eq_ignore_ascii_case("localhost") {
        let detail = format!("hostname is `{name}`: every node of a cluster needs its own name");
        return if mode == Mode::Join { fail(detail, rename) } else { warn(detail, rename) };
    }
    let hint = format!("add `<node-ip> {name}` to /etc/hosts (or a record in the site's DNS)");
    if !h.hosts_file.is_empty() {
        return pass(format!("`{name}` resolves via /etc/hosts to {}", join(&h.hosts_file)));
    }
    match &h.resolver {
        Some(r) if !r.addresses.is_empty() => pass(format!("`{name}` resolves to {}", join(&r.addresses))),
        Some(r) => warn(format!("`{name}` does not resolve: {}", r.error.as_deref().unwrap_or("no addresses")), hint),
        None => warn(
            format!("`{name}` is not in /etc/hosts, and the resolver was not asked (facts from a root tree)"),
            hint,
        ),
    }
}

/// Go's `net.IP.IsGlobalUnicast`, which K3s and RKE2 apply to every nameserver.
fn is_global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_link_local() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Whether K3s/RKE2 would use this file (`isValidResolvConf` in K3s's agent): at least
/// one nameserver, and every one of them global unicast. A single `127.0.0.53` line
/// next to a real server disqualifies the whole file.
fn usable_by_kubelet(r: &ResolvConf) -> bool {
    !r.nameservers.is_empty() && r.nameservers.iter().all(is_global_unicast)
}

fn nameserver(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let d = &f.dns;
    let list = |r: &ResolvConf| or_none(&join(&r.nameservers)).to_string();
    let bad = |r: &ResolvConf| {
        let v: Vec<IpAddr> = r.nameservers.iter().copied().filter(|ip| !is_global_unicast(ip)).collect();
        join(&v)
    };
    let hint = format!(
        "name only the site's DNS servers in /etc/resolv.conf, or write a file with `nameserver <site-dns-ip>` (e.g. \
         /etc/airlock/resolv.conf) and set `resolv-conf` to it in the answers. A loopback nameserver inside a pod is \
         the pod itself, so CoreDNS would forward to itself, and {} falls back to 8.8.8.8, which an air gap cannot \
         reach",
        t.distribution
    );
    if let Some(path) = &d.configured_path {
        // K3s takes a configured resolv-conf as it is; a loopback entry there loops CoreDNS.
        return match &d.configured {
            None => fail(format!("`resolv-conf` is set to {}, which does not exist", path.display()), hint),
            Some(r) if usable_by_kubelet(r) => pass(format!("`resolv-conf` {}: {}", path.display(), list(r))),
            Some(r) if r.nameservers.is_empty() => {
                fail(format!("`resolv-conf` {} names no nameserver", path.display()), hint)
            }
            Some(r) => fail(
                format!("`resolv-conf` {} names {}, which pods cannot use as a nameserver", path.display(), bad(r)),
                hint,
            ),
        };
    }
    let Some(etc) = &d.etc else {
        if !f.live {
            // A bare target root gets its resolv.conf from the image's network setup.
            return skipped(format!(
                "target root {} has no /etc/resolv.conf yet; run `airlock preflight` on the node to check it",
                f.root.display()
            ));
        }
        return fail("there is no /etc/resolv.conf", hint);
    };
    if usable_by_kubelet(etc) {
        return pass(format!("/etc/resolv.conf: {}", list(etc)));
    }
    let why_not = if etc.nameservers.is_empty() {
        "/etc/resolv.conf names no nameserver".to_string()
    } else {
        format!("/etc/resolv.conf names {} ({} unusable in pods)", list(etc), bad(etc))
    };
    // As K3s/RKE2 do: if /etc/resolv.conf does not qualify, they use systemd-resolved's
    // upstream list.
    if let Some(r) = d.systemd_resolved.as_ref().filter(|r| usable_by_kubelet(r)) {
        return pass(format!("{why_not}, so {} uses {} from {}", t.distribution, list(r), r.path.display()));
    }
    fail(format!("{why_not}, and there is no usable fallback, so {} would use 8.8.8.8", t.distribution), hint)
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

fn ports(f: &Facts, t: &Thresholds, mode: Mode) -> Option<Outcome> {
    if f.why_unavailable("listeners").is_some() {
        return unknown(f, "listeners", "which ports are in use", "`ss -ltnup`");
    }
    let wanted = |p: Protocol| match p {
        Protocol::Tcp => &t.ports.tcp,
        Protocol::Udp => &t.ports.udp,
    };
    // (port, protocol) → who holds it; several sockets (IPv4 and IPv6) collapse into one line.
    let mut held: BTreeMap<(u16, Protocol), BTreeSet<String>> = BTreeMap::new();
    let mut foreign: BTreeSet<(u16, Protocol)> = BTreeSet::new();
    let own_names = t.distribution.process_names();
    for l in &f.network.listeners {
        if !wanted(l.protocol).iter().any(|r| r.contains(l.port)) {
            continue;
        }
        let who = match (&l.process, l.inode) {
            (Some(p), _) => p.clone(),
            (None, 0) => "the kernel".to_string(),
            (None, _) => "an unknown process".to_string(),
        };
        // On an upgrade the running install holds its own ports. Kernel sockets (its
        // VXLAN/WireGuard) and owners we could not see are given the benefit of the doubt.
        let own = match &l.process {
            Some(p) => own_names.contains(&p.as_str()),
            None => true,
        };
        // So does an install airlock started here that this run continues.
        let expected = mode == Mode::Upgrade || f.airlock_journal.is_some();
        if !expected || !own {
            foreign.insert((l.port, l.protocol));
        }
        held.entry((l.port, l.protocol)).or_default().insert(format!("{who} on {}", l.address));
    }
    let describe = |keys: &mut dyn Iterator<Item = &(u16, Protocol)>| {
        keys.map(|k| format!("{}/{} ({})", k.0, k.1.name(), held[k].iter().cloned().collect::<Vec<_>>().join("; ")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !foreign.is_empty() {
        let first = foreign.iter().next().map(|k| k.0).unwrap_or_default();
        return fail(
            format!("in use: {}", describe(&mut foreign.iter())),
            format!(
                "stop or move what holds them (`ss -ltnup 'sport = :{first}'` names the process); if it is a \
                 leftover K3s/RKE2, remove that install first"
            ),
        );
    }
    let ranges = |rs: &[PortRange]| rs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let free = format!("tcp {}; udp {}", or_none(&ranges(&t.ports.tcp)), or_none(&ranges(&t.ports.udp)));
    if held.is_empty() {
        pass(format!("free: {free}"))
    } else {
        pass(format!(
            "held by the existing {} install, as expected on upgrade: {}",
            t.distribution,
            describe(&mut held.keys())
        ))
    }
}

fn selinux(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let s = &f.selinux;
    let missing: Vec<_> = t.selinux_policies.iter().filter(|p| !s.modules.contains(&p.module)).collect();
    fn rpms(ps: &[&SelinuxPolicy]) -> Vec<String> {
        ps.iter().map(|p| p.rpm.clone()).collect()
    }
    let install_hint = |ps: &[&SelinuxPolicy]| {
        let files: Vec<String> = rpms(ps).iter().map(|r| format!("./{r}-*.rpm")).collect();
        let mut h = format!(
            "install the policy RPMs offline before installing: `dnf install --disablerepo='*' {}` (from the bundle's \
             RPMs or the site's mirror)",
            files.join(" ")
        );
        let on_disk: Vec<&str> =
            ps.iter().filter(|p| s.packaged.contains(&p.module)).map(|p| p.module.as_str()).collect();
        if !on_disk.is_empty() {
            let cmds: Vec<String> =
                on_disk.iter().map(|m| format!("semodule -i /usr/share/selinux/packages/{m}.pp*")).collect();
            h.push_str(&format!(
                "; the package files for {} are on disk but not loaded (installed without scriptlets?): `{}`",
                on_disk.join(", "),
                cmds.join(" && ")
            ));
        }
        h
    };
    match s.mode {
        SelinuxMode::Disabled => {
            let later = s.configured_mode.as_deref().filter(|m| *m == "enforcing" || *m == "permissive");
            match later {
                Some(m) if !missing.is_empty() => warn(
                    format!(
                        "SELinux is disabled now, but /etc/selinux/config sets `{m}` for the next boot and {} {} \
                         not installed",
                        rpms(&missing).join(", "),
                        if missing.len() == 1 { "is" } else { "are" }
                    ),
                    install_hint(&missing),
                ),
                _ => pass("SELinux is disabled; no policy packages needed"),
            }
        }
        SelinuxMode::Enforcing if !missing.is_empty() => fail(
            format!(
                "SELinux is enforcing and the policy modules of {} are not loaded: {}'s containers would be denied",
                rpms(&missing).join(", "),
                t.distribution
            ),
            install_hint(&missing),
        ),
        SelinuxMode::Permissive if !missing.is_empty() => warn(
            format!(
                "SELinux is permissive, so nothing is denied now, but {} {} missing: switching to enforcing later \
                 would break {}",
                rpms(&missing).join(", "),
                if missing.len() == 1 { "is" } else { "are" },
                t.distribution
            ),
            install_hint(&missing),
        ),
        mode => {
            let m = if mode == SelinuxMode::Enforcing { "enforcing" } else { "permissive" };
            let all: Vec<&SelinuxPolicy> = t.selinux_policies.iter().collect();
            pass(format!("SELinux is {m} with {} loaded", rpms(&all).join(", ")))
        }
    }
}

/// RKE2's CIS profile reads these at start and exits unless each is exactly right
/// (protect-kernel-defaults). The install writes `/etc/sysctl.d/60-rke2-cis.conf` and
/// applies it before the first start, so on an install or join a wrong value only
/// warns; on an upgrade the file is already there, and a wrong value means something
/// overrides it, so it fails.
fn cis_sysctls(f: &Facts, t: &Thresholds, mode: Mode) -> Option<Outcome> {
    if t.required_sysctls.is_empty() {
        return None;
    }
    let mut wrong = Vec::new();
    let mut unread = Vec::new();
    for (key, want) in &t.required_sysctls {
        match f.sysctls.get(key) {
            Some(got) if got == want => {}
            Some(got) => wrong.push(format!("{key} = {got} (needs {want})")),
            None => unread.push(key.as_str()),
        }
    }
    let fix = format!(
        "`install -m 0644 /usr/local/share/rke2/rke2-cis-sysctl.conf /etc/sysctl.d/60-rke2-cis.conf && systemctl \
         restart systemd-sysctl` (the file sets {}); if a value stays wrong, a later file in `systemd-analyze \
         cat-config sysctl.d` overrides it",
        t.required_sysctls.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    );
    if !wrong.is_empty() {
        let detail = format!("{}: RKE2 with `profile: cis` exits at start", wrong.join(", "));
        return match mode {
            Mode::Upgrade => fail(detail, fix),
            Mode::Install | Mode::Join => warn(
                format!(
                    "{detail}; the install writes /etc/sysctl.d/60-rke2-cis.conf and applies it before the first start"
                ),
                fix,
            ),
        };
    }
    if !unread.is_empty() {
        return unknown(f, "sysctls", &format!("the kernel settings {}", unread.join(", ")), "`sysctl -a`");
    }
    pass(t.required_sysctls.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "))
}

/// fapolicyd denies executing what its rules do not allow: containerd, runc and the
/// CNI plugins run from under the data directory. For RKE2 the install adds the rules
/// RKE2's own installer adds (`/etc/fapolicyd/rules.d/80-rke2.rules`) and reloads them;
/// K3s' installer has none, so the operator must allow it.
fn fapolicyd(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    if !f.hardening.fapolicyd_running {
        return pass("fapolicyd is not running");
    }
    match t.distribution {
        Distribution::Rke2 => pass(
            "fapolicyd is running; the install adds /etc/fapolicyd/rules.d/80-rke2.rules (as RKE2's installer does) \
             and reloads the rules with `fagenrules --load`",
        ),
        Distribution::K3s => warn(
            "fapolicyd is running and K3s brings no rules for it: containerd, runc and the CNI plugins under \
             /var/lib/rancher/k3s may be denied execution",
            "add `allow perm=any all : dir=/var/lib/rancher/` (and `dir=/run/k3s/`, `dir=/var/lib/kubelet/`) to a file \
             in /etc/fapolicyd/rules.d/, then `fagenrules --load && systemctl restart fapolicyd`",
        ),
    }
}

/// RKE2's installer unpacks into `/opt/rke2` when `/usr/local` is read-only or a mount
/// point, and so does airlock; K3s' binary must go to `/usr/local/bin`.
fn usr_local(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let Some(m) = &f.hardening.usr_local else {
        return unknown(f, "mounts", "how /usr/local is mounted", "`findmnt -T /usr/local`");
    };
    let what = match (m.mount_point, m.read_only) {
        (_, true) => "read-only",
        (true, false) => "a mount point of its own",
        (false, false) => return pass("/usr/local is writable and part of its parent file system"),
    };
    match t.distribution {
        Distribution::Rke2 => pass(format!(
            "/usr/local is {what}: RKE2 is unpacked under /opt/rke2 and its units go to /etc/systemd/system, as \
             RKE2's installer does"
        )),
        Distribution::K3s if m.read_only => fail(
            "/usr/local is read-only: the K3s binary, its links and scripts go to /usr/local/bin",
            "remount /usr/local read-write for the install (`mount -o remount,rw /usr/local`), or install RKE2",
        ),
        Distribution::K3s => pass(format!("/usr/local is {what} and writable")),
    }
}

/// FIPS mode: RKE2 is built with a FIPS 140 validated crypto module (BoringCrypto);
/// K3s is not, so a FIPS site should run RKE2.
fn fips(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    match (f.hardening.fips, t.distribution) {
        (None, _) => unknown(f, "fips", "whether FIPS mode is on", "`cat /proc/sys/crypto/fips_enabled`"),
        (Some(false), _) => pass("FIPS mode is off"),
        (Some(true), Distribution::Rke2) => pass("FIPS mode is on; RKE2 uses a FIPS 140 validated crypto module"),
        (Some(true), Distribution::K3s) => warn(
            "FIPS mode is on, but K3s is not built with a FIPS validated crypto module",
            "install RKE2 on FIPS sites (a profile with `distribution: rke2`)",
        ),
    }
}

fn firewalld(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let s = &f.services;
    let tcp: Vec<String> = t.ports.tcp.iter().map(|r| format!("--add-port={r}/tcp")).collect();
    let udp: Vec<String> = t.ports.udp.iter().map(|r| format!("--add-port={r}/udp")).collect();
    let open = format!(
        "or keep it and open the ports and trust the pod and service networks: `firewall-cmd --permanent {} {} && \
         firewall-cmd --permanent --zone=trusted --add-source=10.42.0.0/16 --add-source=10.43.0.0/16 && \
         firewall-cmd --reload`",
        tcp.join(" "),
        udp.join(" ")
    );
    match (s.firewalld_pid, t.distribution) {
        (Some(pid), Distribution::Rke2) => fail(
            format!("firewalld is running (pid {pid}); it conflicts with RKE2's default Canal networking"),
            "`systemctl disable --now firewalld` (RKE2's documented requirement)",
        ),
        (Some(pid), Distribution::K3s) => warn(
            format!("firewalld is running (pid {pid}); with its default zone, pod and service traffic is dropped"),
            format!("`systemctl disable --now firewalld`, {open}"),
        ),
        (None, d) if s.firewalld_enabled => warn(
            "firewalld is not running but enabled: it will start at the next boot",
            match d {
                Distribution::Rke2 => "`systemctl disable firewalld`".to_string(),
                Distribution::K3s => format!("`systemctl disable firewalld`, {open}"),
            },
        ),
        _ => pass("firewalld is not running"),
    }
}

fn nm_cloud_setup(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    if f.services.nm_cloud_setup_enabled {
        // Both units carry `ExecStartPre=/bin/sh -xc '! systemctl is-enabled --quiet nm-cloud-setup.service'`.
        return fail(
            format!(
                "nm-cloud-setup is enabled: the {} unit refuses to start while it is, and it rewrites the routing \
                 tables the CNI sets up",
                t.distribution
            ),
            "`systemctl disable nm-cloud-setup.service nm-cloud-setup.timer` and reboot",
        );
    }
    pass("nm-cloud-setup is not enabled")
}

fn describe_install(e: &ExistingInstall) -> String {
    let paths: Vec<String> = e.paths.iter().map(|p| p.display().to_string()).collect();
    let mut s = format!("{} ({})", e.distribution, or_none(&paths.join(", ")));
    if !e.running.is_empty() {
        s.push_str(&format!(", running: {}", e.running.join(", ")));
    }
    s
}

fn existing_install(f: &Facts, t: &Thresholds, mode: Mode) -> Option<Outcome> {
    let dist = t.distribution;
    let same = f.existing.iter().find(|e| e.distribution == dist);
    let others: Vec<String> = f.existing.iter().filter(|e| e.distribution != dist).map(describe_install).collect();
    match mode {
        Mode::Install | Mode::Join => {
            if f.existing.is_empty() {
                return pass("no K3s or RKE2 files found");
            }
            if let (Some(journal), true, Some(e)) = (&f.airlock_journal, others.is_empty(), same) {
                return pass(format!(
                    "found {}, laid down by airlock (journal {}): this run re-checks every step and continues it",
                    describe_install(e),
                    journal.display()
                ));
            }
            let found: Vec<String> = f.existing.iter().map(describe_install).collect();
            let uninstall: Vec<String> =
                f.existing.iter().map(|e| format!("/usr/local/bin/{}-uninstall.sh", e.distribution)).collect();
            let what =
                if mode == Mode::Join { "a joining node must be clean" } else { "a new install would mix with it" };
            fail(
                format!("found {}: {what}", found.join("; ")),
                format!(
                    "to upgrade that install run `airlock upgrade`; to replace it, remove it first (`{}`) and run \
                     again",
                    uninstall.join("` / `")
                ),
            )
        }
        Mode::Upgrade => {
            if !others.is_empty() {
                return fail(
                    format!(
                        "found {}, but this bundle carries {dist}: switching distributions is not an upgrade",
                        others.join("; ")
                    ),
                    "install onto a clean host and migrate the workloads, or use a bundle for the installed \
                     distribution",
                );
            }
            match same {
                Some(e) => pass(format!("found {} to upgrade", describe_install(e))),
                None => fail(
                    format!("no {dist} install found to upgrade"),
                    "for a new install run `airlock install`; if it lives elsewhere, check the target root",
                ),
            }
        }
    }
}

fn etcd_fsync(f: &Facts, t: &Thresholds, _: Mode) -> Option<Outcome> {
    let Some(max) = t.max_fsync_p99_ms else {
        return skipped("this node runs no etcd (the profile sets no fsync limit; single-node K3s uses SQLite)");
    };
    match &f.fsync {
        FsyncFacts::NotRun => skipped("the fsync probe was not run for these facts"),
        FsyncFacts::Failed { dir, error } => warn(
            format!("the fsync probe could not write in {}: {error}", dir.display()),
            "check that the data directory's filesystem is writable, then run preflight again",
        ),
        FsyncFacts::Measured(m) => {
            let summary = format!(
                "p99 fdatasync {:.2} ms (p50 {:.2} ms, max {:.2} ms) over {} writes of {} bytes in {}",
                m.p99_ms,
                m.p50_ms,
                m.max_ms,
                m.samples,
                m.block_bytes,
                m.dir.display()
            );
            let hint = format!(
                "put /var/lib/rancher/{}/server/db on SSD/NVMe or a volume with fast synchronous writes; on a VM, \
                 avoid network or thin-provisioned storage and host-side sync emulation",
                t.distribution
            );
            if m.p99_ms > max {
                fail(
                    format!("{summary}; etcd needs under {max} ms, or it misses heartbeats and leader elections flap"),
                    hint,
                )
            } else if m.stopped_early {
                warn(
                    format!("{summary}; the probe ran out of time before finishing, so the disk is slow overall"),
                    hint,
                )
            } else {
                pass(format!("{summary} (limit {max} ms)"))
            }
        }
    }
}

fn join_token(f: &Facts, _: &Thresholds, mode: Mode) -> Option<Outcome> {
    if mode != Mode::Join {
        return None;
    }
    let Some(tok) = &f.join_token else {
        return skipped("no join token file was given to check");
    };
    let path = tok.path.display();
    let copy = format!(
        "copy the token from the node that started the cluster, where its install wrote it: `scp \
         <first-server>:{token} {path} && chmod 600 {path}`",
        token = crate::state::CLUSTER_TOKEN_PATH
    );
    if !tok.present {
        return fail(format!("{path} does not exist; the node cannot join without the cluster's token"), copy);
    }
    if tok.size_bytes == 0 {
        return fail(format!("{path} is empty"), copy);
    }
    match tok.mode {
        Some(m) if m & 0o077 != 0 => warn(
            format!("{path} is mode {m:04o}: readable by others, and the token admits nodes to the cluster"),
            format!("`chmod 600 {path}`"),
        ),
        _ => pass(format!("{path} is present ({} bytes, owner-only)", tok.size_bytes)),
    }
}

fn join_server_reachable(_: &Facts, t: &Thresholds, mode: Mode) -> Option<Outcome> {
    if mode != Mode::Join {
        return None;
    }
    let port = match t.distribution {
        Distribution::K3s => 6443,
        Distribution::Rke2 => 9345,
    };
    skipped(format!(
        "needs a connection to the first server's port {port}, which is not a host fact; not checked by preflight"
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::site::preflight::thresholds::Distribution;

    /// Facts of a host that passes everything for a K3s install.
    fn good() -> Facts {
        let mut f = Facts {
            root: "/".into(),
            live: true,
            cpu: CpuFacts {
                arch: Some("x86_64".into()),
                count: Some(8),
                flags: X86_64_V2_FLAGS.iter().map(|s| s.to_string()).collect(),
                model: Some("Test CPU".into()),
            },
            memory: Some(MemoryFacts { total_kib: 16 << 20, available_kib: Some(12 << 20) }),
            swap: Some(vec![]),
            disk: Some(DiskFacts {
                data_dir: "/var/lib/rancher/k3s".into(),
                measured: "/var/lib/rancher/k3s".into(),
                total_bytes: 500 << 30,
                available_bytes: 400 << 30,
            }),
            kernel_release: Some("5.14.0-427.el9.x86_64".into()),
            cgroup: CgroupFacts {
                version: Some(CgroupVersion::V2),
                controllers: ["cpu", "cpuset", "io", "memory", "pids"].iter().map(|s| s.to_string()).collect(),
            },
            ..Facts::default()
        };
        f.modules.modules_dir = Some("/lib/modules/5.14.0-427.el9.x86_64".into());
        f.modules.states.insert("overlay".into(), ModuleState::Loaded);
        f.modules.states.insert("br_netfilter".into(), ModuleState::Loadable);
        f.network.ipv4_default_routes =
            vec![DefaultRoute { interface: "eth0".into(), gateway: Some("10.0.0.1".parse().unwrap()), metric: 100 }];
        f.network.ipv4_addresses = vec![
            InterfaceAddress { interface: Some("lo".into()), address: Ipv4Addr::LOCALHOST },
            InterfaceAddress { interface: Some("eth0".into()), address: "10.0.0.5".parse().unwrap() },
        ];
        f.dns.etc =
            Some(ResolvConf { path: "/etc/resolv.conf".into(), nameservers: vec!["10.0.0.2".parse().unwrap()] });
        f.hostname =
            HostnameFacts { name: Some("node1".into()), hosts_file: vec!["10.0.0.5".parse().unwrap()], resolver: None };
        f.time.kernel = Some(KernelClock { synchronized: true, max_error_us: 100, est_error_us: 10 });
        f.fsync = FsyncFacts::Measured(FsyncMeasurement {
            dir: "/var/lib".into(),
            samples: 200,
            block_bytes: 2300,
            p50_ms: 0.5,
            p99_ms: 2.0,
            max_ms: 3.0,
            elapsed_ms: 150.0,
            stopped_early: false,
        });
        f.hardening.usr_local = Some(UsrLocalMount::default());
        f.hardening.fips = Some(false);
        f
    }

    fn k3s() -> Thresholds {
        Thresholds { min_free_disk_bytes: 30 << 30, ..Thresholds::defaults(Distribution::K3s) }
    }

    fn run(id: &str, f: &Facts, t: &Thresholds, mode: Mode) -> Outcome {
        let def = CHECKS.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}"));
        (def.run)(f, t, mode).unwrap_or_else(|| panic!("{id} does not apply in {mode:?}"))
    }

    fn status(id: &str, f: &Facts, t: &Thresholds, mode: Mode) -> Status {
        run(id, f, t, mode).status
    }

    #[track_caller]
    fn assert_status(id: &str, f: &Facts, t: &Thresholds, mode: Mode, want: Status) -> Outcome {
        let o = run(id, f, t, mode);
        assert_eq!(o.status, want, "{id}: {} / hint: {:?}", o.detail, o.hint);
        if want == Status::Warn || want == Status::Fail {
            assert!(o.hint.as_deref().is_some_and(|h| !h.is_empty()), "{id} {want:?} without a hint");
        }
        o
    }

    #[test]
    fn a_good_host_passes_every_check() {
        let (f, t) = (good(), k3s());
        for def in CHECKS {
            if let Some(o) = (def.run)(&f, &t, Mode::Install) {
                assert!(o.status == Status::Pass, "{}: {:?} {}", def.id, o.status, o.detail);
            }
        }
    }

    #[test]
    fn check_ids_are_unique_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for c in CHECKS {
            assert!(seen.insert(c.id), "duplicate {}", c.id);
            assert!(c.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{}", c.id);
        }
    }

    #[test]
    fn cpu_count_pass_warn_fail() {
        let t = k3s();
        let mut f = good();
        assert_status("cpu-count", &f, &t, Mode::Install, Status::Pass);
        f.cpu.count = Some(2);
        assert_status("cpu-count", &f, &t, Mode::Install, Status::Warn);
        f.cpu.count = Some(1);
        let o = assert_status("cpu-count", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("1 CPUs") && o.detail.contains("at least 2"));
        f.cpu.count = None;
        assert_status("cpu-count", &f, &t, Mode::Install, Status::Warn);
    }

    #[test]
    fn x86_64_v2_needs_all_flags_on_x86_only() {
        let mut t = k3s();
        let mut f = good();
        f.cpu.flags.retain(|fl| fl != "sse4_2" && fl != "popcnt");
        let o = assert_status("cpu-x86-64-v2", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("popcnt, sse4_2"), "{}", o.detail);
        assert!(o.hint.unwrap().contains("host-passthrough"));
        f.cpu.arch = Some("aarch64".into());
        assert_status("cpu-x86-64-v2", &f, &t, Mode::Install, Status::Pass);
        f.cpu.arch = Some("x86_64".into());
        f.cpu.flags.clear();
        assert_status("cpu-x86-64-v2", &f, &t, Mode::Install, Status::Warn);
        t.require_x86_64_v2 = false;
        assert_status("cpu-x86-64-v2", &f, &t, Mode::Install, Status::Pass);
    }

    #[test]
    fn memory_allows_for_kernel_reservations() {
        let t = Thresholds { min_memory_mib: 4096, recommended_memory_mib: Some(8192), ..k3s() };
        let mut f = good();
        // A "4 GiB" VM reports a little less as MemTotal.
        f.memory = Some(MemoryFacts { total_kib: 3_900_000, available_kib: None });
        assert_status("memory", &f, &t, Mode::Install, Status::Warn);
        f.memory = Some(MemoryFacts { total_kib: 2 << 20, available_kib: None });
        assert_status("memory", &f, &t, Mode::Install, Status::Fail);
        f.memory = Some(MemoryFacts { total_kib: 8 << 20, available_kib: None });
        assert_status("memory", &f, &t, Mode::Install, Status::Pass);
        f.memory = None;
        f.unavailable.insert("memory".into(), "cannot read /proc/meminfo".into());
        let o = assert_status("memory", &f, &t, Mode::Install, Status::Warn);
        assert!(o.detail.contains("/proc/meminfo"));
    }

    #[test]
    fn disk_space_fails_short_and_warns_below_sizing_or_near_image_gc() {
        let t = k3s(); // needs 30 GiB
        let mut f = good();
        let d = f.disk.as_mut().unwrap();
        d.available_bytes = 10 << 30;
        let o = assert_status("disk-space", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("10.0 GiB free") && o.detail.contains("30.0 GiB"), "{}", o.detail);
        // 100 GiB disk, 40 free: 30 more would leave it 90% full.
        let d = f.disk.as_mut().unwrap();
        d.total_bytes = 100 << 30;
        d.available_bytes = 40 << 30;
        let o = assert_status("disk-space", &f, &t, Mode::Install, Status::Warn);
        assert!(o.detail.contains("90% full") && o.detail.contains("k3s#1552"), "{}", o.detail);
        f.disk.as_mut().unwrap().available_bytes = 80 << 30;
        assert_status("disk-space", &f, &t, Mode::Install, Status::Pass);
        let sized = Thresholds { recommended_free_disk_bytes: Some(100 << 30), ..t };
        let o = assert_status("disk-space", &f, &sized, Mode::Install, Status::Warn);
        assert!(o.detail.contains("sized for"), "{}", o.detail);
    }

    #[test]
    fn kernel_version_against_minimum() {
        let t = k3s();
        let mut f = good();
        f.kernel_release = Some("3.10.0-1160.el7.x86_64".into());
        let o = assert_status("kernel-version", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("4.18.0"));
        f.kernel_release = Some("weird".into());
        assert_status("kernel-version", &f, &t, Mode::Install, Status::Warn);
        f.kernel_release = Some("6.8.0-45-generic".into());
        assert_status("kernel-version", &f, &t, Mode::Install, Status::Pass);
    }

    #[test]
    fn cgroups_fail_without_memory_and_warn_on_v1() {
        let t = k3s();
        let mut f = good();
        f.cgroup.controllers.retain(|c| c != "memory");
        let o = assert_status("cgroup-controllers", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("memory") && o.hint.unwrap().contains("cgroup_enable=memory"));
        f = good();
        f.cgroup.version = Some(CgroupVersion::V1);
        assert_status("cgroup-controllers", &f, &t, Mode::Install, Status::Warn);
    }

    #[test]
    fn kernel_modules_missing_fails_and_unknown_warns() {
        let t = k3s();
        let mut f = good();
        f.modules.states.insert("br_netfilter".into(), ModuleState::Missing);
        let o = assert_status("kernel-modules", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("br_netfilter") && o.hint.unwrap().contains("modprobe br_netfilter"));
        f.modules.modules_dir = None;
        assert_status("kernel-modules", &f, &t, Mode::Install, Status::Warn);
        f = good();
        let o = assert_status("kernel-modules", &f, &t, Mode::Install, Status::Pass);
        assert!(o.detail.contains("br_netfilter (loadable"));
    }

    #[test]
    fn swap_on_warns_with_swapoff_and_fstab() {
        let t = k3s();
        let mut f = good();
        f.swap = Some(vec![SwapArea { name: "/swap.img".into(), kind: "file".into(), size_kib: 2 << 20, used_kib: 0 }]);
        let o = assert_status("swap", &f, &t, Mode::Install, Status::Warn);
        let hint = o.hint.unwrap();
        assert!(hint.contains("swapoff -a") && hint.contains("/etc/fstab"));
        f.swap = None;
        assert_status("swap", &f, &t, Mode::Install, Status::Warn);
    }

    #[test]
    fn no_default_route_fails_with_the_dummy_interface_fix() {
        let t = k3s();
        let mut f = good();
        f.network.ipv4_default_routes.clear();
        let o = assert_status("default-route", &f, &t, Mode::Install, Status::Fail);
        let hint = o.hint.unwrap();
        assert!(hint.contains("k3s#1144") && hint.contains("ip route add default via"), "{hint}");
        // A dummy route whose interface has only a link-local address does not help.
        f.network.ipv4_default_routes = vec![DefaultRoute { interface: "dummy0".into(), gateway: None, metric: 1000 }];
        f.network
            .ipv4_addresses
            .push(InterfaceAddress { interface: Some("dummy0".into()), address: "169.254.255.254".parse().unwrap() });
        assert_status("default-route", &f, &t, Mode::Install, Status::Warn);
    }

    #[test]
    fn ipv4_address_needs_a_routable_one() {
        let t = k3s();
        let mut f = good();
        f.network.ipv4_addresses.retain(|a| a.address.is_loopback());
        assert_status("ipv4-address", &f, &t, Mode::Install, Status::Fail);
        f.network.ipv4_addresses.push(InterfaceAddress { interface: None, address: "169.254.1.1".parse().unwrap() });
        let o = assert_status("ipv4-address", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("link-local"));
        f.unavailable.insert("addresses".into(), "getifaddrs failed".into());
        assert_status("ipv4-address", &f, &t, Mode::Install, Status::Warn);
    }

    #[test]
    fn time_sync_warns_when_unsynchronised_or_unknown() {
        let t = k3s();
        let mut f = good();
        f.time.kernel = Some(KernelClock { synchronized: false, max_error_us: 16_000_000, est_error_us: 16_000_000 });
        assert_status("time-sync", &f, &t, Mode::Install, Status::Warn);
        f.time.timesyncd_synchronized = true;
        assert_status("time-sync", &f, &t, Mode::Install, Status::Pass);
        f.time = TimeFacts::default();
        let o = assert_status("time-sync", &f, &t, Mode::Install, Status::Warn);
        assert!(o.detail.contains("chronyc tracking"));
    }

    #[test]
    fn hostname_must_be_a_node_name_and_resolve() {
        let t = k3s();
        let mut f = good();
        f.hostname.name = Some("web_01".into());
        assert_status("hostname", &f, &t, Mode::Install, Status::Fail);
        f.hostname.name = Some("Node1".into()); // the kubelet lowercases it
        assert_status("hostname", &f, &t, Mode::Install, Status::Pass);
        f.hostname.name = Some("localhost".into());
        assert_status("hostname", &f, &t, Mode::Install, Status::Warn);
        assert_status("hostname", &f, &t, Mode::Join, Status::Fail);
        f.hostname = HostnameFacts {
            name: Some("node1".into()),
            hosts_file: vec![],
            resolver: Some(ResolverAnswer { addresses: vec![], error: Some("Name or service not known".into()) }),
        };
        let o = assert_status("hostname", &f, &t, Mode::Install, Status::Warn);
        assert!(o.hint.unwrap().contains("/etc/hosts"));
        f.hostname.resolver = Some(ResolverAnswer { addresses: vec!["10.0.0.5".parse().unwrap()], error: None });
        assert_status("hostname", &f, &t, Mode::Install, Status::Pass);
    }

    #[test]
    fn loopback_only_nameserver_fails_unless_resolved_or_resolv_conf_helps() {
        let t = k3s();
        let mut f = good();
        f.dns.etc =
            Some(ResolvConf { path: "/etc/resolv.conf".into(), nameservers: vec!["127.0.0.53".parse().unwrap()] });
        let o = assert_status("nameserver", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("127.0.0.53") && o.hint.unwrap().contains("resolv-conf"));
        f.dns.systemd_resolved = Some(ResolvConf {
            path: "/run/systemd/resolve/resolv.conf".into(),
            nameservers: vec!["10.0.0.2".parse().unwrap()],
        });
        assert_status("nameserver", &f, &t, Mode::Install, Status::Pass);
        f.dns.configured_path = Some(PathBuf::from("/etc/airlock/resolv.conf"));
        assert_status("nameserver", &f, &t, Mode::Install, Status::Fail);
        f.dns.configured = Some(ResolvConf {
            path: "/etc/airlock/resolv.conf".into(),
            nameservers: vec!["10.9.9.9".parse().unwrap()],
        });
        assert_status("nameserver", &f, &t, Mode::Install, Status::Pass);
        f.dns = DnsFacts::default();
        assert_status("nameserver", &f, &t, Mode::Install, Status::Fail);
        // One loopback entry next to a real server disqualifies the file for K3s.
        f.dns.etc = Some(ResolvConf {
            path: "/etc/resolv.conf".into(),
            nameservers: vec!["10.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        });
        let o = assert_status("nameserver", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("127.0.0.1 unusable") && o.detail.contains("8.8.8.8"), "{}", o.detail);
        f.dns.etc.as_mut().unwrap().nameservers = vec!["fe80::1".parse().unwrap()];
        assert_status("nameserver", &f, &t, Mode::Install, Status::Fail);
    }

    fn listener(protocol: Protocol, port: u16, inode: u64, process: Option<&str>) -> Listener {
        Listener { protocol, address: "0.0.0.0".parse().unwrap(), port, inode, process: process.map(str::to_string) }
    }

    #[test]
    fn ports_in_use_fail_except_own_listeners_on_upgrade() {
        let t = k3s();
        let mut f = good();
        f.network.listeners = vec![
            listener(Protocol::Tcp, 22, 1, Some("sshd")),
            listener(Protocol::Tcp, 6443, 2, Some("k3s-server")),
            listener(Protocol::Udp, 8472, 0, None),
        ];
        let o = assert_status("ports", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("6443/tcp (k3s-server") && o.detail.contains("8472/udp (the kernel"), "{}", o.detail);
        assert!(!o.detail.contains("22/"));
        let o = assert_status("ports", &f, &t, Mode::Upgrade, Status::Pass);
        assert!(o.detail.contains("6443/tcp"), "{}", o.detail);
        f.network.listeners.push(listener(Protocol::Tcp, 10250, 3, Some("nginx")));
        let o = assert_status("ports", &f, &t, Mode::Upgrade, Status::Fail);
        assert!(o.detail.contains("10250/tcp (nginx") && !o.detail.contains("6443"), "{}", o.detail);
        f.network.listeners.clear();
        f.unavailable.insert("listeners".into(), "no /proc/net/tcp".into());
        assert_status("ports", &f, &t, Mode::Install, Status::Warn);
    }

    #[test]
    fn rke2_nodeport_range_counts() {
        let t = Thresholds::defaults(Distribution::Rke2);
        let mut f = good();
        f.network.listeners = vec![listener(Protocol::Tcp, 30080, 9, Some("haproxy"))];
        let o = assert_status("ports", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("30080/tcp"));
    }

    #[test]
    fn selinux_enforcing_without_policy_fails_naming_rpms() {
        let t = k3s();
        let mut f = good();
        f.selinux.mode = SelinuxMode::Enforcing;
        f.selinux.modules = vec!["container".into()];
        let o = assert_status("selinux", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("k3s-selinux") && !o.detail.contains("container-selinux"), "{}", o.detail);
        assert!(o.hint.as_deref().unwrap().contains("./k3s-selinux-*.rpm"));
        f.selinux.packaged = vec!["k3s".into()];
        let o = assert_status("selinux", &f, &t, Mode::Install, Status::Fail);
        assert!(o.hint.unwrap().contains("semodule -i /usr/share/selinux/packages/k3s.pp"));
        f.selinux.mode = SelinuxMode::Permissive;
        assert_status("selinux", &f, &t, Mode::Install, Status::Warn);
        f.selinux.modules.push("k3s".into());
        f.selinux.mode = SelinuxMode::Enforcing;
        assert_status("selinux", &f, &t, Mode::Install, Status::Pass);
        f.selinux = SelinuxFacts { configured_mode: Some("enforcing".into()), ..SelinuxFacts::default() };
        assert_status("selinux", &f, &t, Mode::Install, Status::Warn);
    }

    #[test]
    fn distribution_cis_sysctls_are_checked_only_for_the_cis_profile_with_the_fix_as_hint() {
        let plain = Thresholds::defaults(Distribution::Rke2);
        assert!(crate::site::preflight::evaluate(&good(), &plain, Mode::Install).iter().all(|c| c.id != "cis-sysctls"));
        let cis = Thresholds {
            required_sysctls: crate::render::distribution::CIS_SYSCTLS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..plain
        };
        let mut f = good();
        for (k, v) in crate::render::distribution::CIS_SYSCTLS {
            f.sysctls.insert(k.to_string(), v.to_string());
        }
        assert_status("cis-sysctls", &f, &cis, Mode::Install, Status::Pass);
        // A stock kernel: overcommit heuristic (0), no panic reboot (0).
        f.sysctls.insert("vm.overcommit_memory".into(), "0".into());
        f.sysctls.insert("kernel.panic".into(), "0".into());
        let o = assert_status("cis-sysctls", &f, &cis, Mode::Install, Status::Warn);
        assert!(o.detail.contains("vm.overcommit_memory = 0 (needs 1)") && o.detail.contains("kernel.panic = 0"));
        let hint = o.hint.unwrap();
        assert!(hint.contains("60-rke2-cis.conf") && hint.contains("systemctl restart systemd-sysctl"), "{hint}");
        // On an upgrade the file is in place already: something overrides it.
        assert_status("cis-sysctls", &f, &cis, Mode::Upgrade, Status::Fail);
        // Unreadable on the live host: a warning naming how to look.
        f.sysctls.clear();
        f.unavailable.insert("sysctls".into(), "cannot read /proc/sys/kernel/panic".into());
        assert_status("cis-sysctls", &f, &cis, Mode::Install, Status::Warn);
    }

    #[test]
    fn distribution_hardened_rhel_facts_fapolicyd_usr_local_and_fips() {
        let rke2 = Thresholds::defaults(Distribution::Rke2);
        let mut f = good();
        f.hardening.usr_local = Some(UsrLocalMount::default());
        f.hardening.fips = Some(false);
        for id in ["fapolicyd", "usr-local", "fips"] {
            assert_status(id, &f, &k3s(), Mode::Install, Status::Pass);
        }
        f.hardening.fapolicyd_running = true;
        let o = assert_status("fapolicyd", &f, &rke2, Mode::Install, Status::Pass);
        assert!(o.detail.contains("80-rke2.rules"), "{}", o.detail);
        assert_status("fapolicyd", &f, &k3s(), Mode::Install, Status::Warn);
        f.hardening.usr_local = Some(UsrLocalMount { mount_point: false, read_only: true });
        let o = assert_status("usr-local", &f, &rke2, Mode::Install, Status::Pass);
        assert!(o.detail.contains("/opt/rke2"), "{}", o.detail);
        assert_status("usr-local", &f, &k3s(), Mode::Install, Status::Fail);
        f.hardening.fips = Some(true);
        assert_status("fips", &f, &rke2, Mode::Install, Status::Pass);
        assert_status("fips", &f, &k3s(), Mode::Install, Status::Warn);
    }

    #[test]
    fn firewalld_warns_for_k3s_and_fails_for_rke2() {
        let mut f = good();
        f.services.firewalld_pid = Some(812);
        let o = assert_status("firewalld", &f, &k3s(), Mode::Install, Status::Warn);
        assert!(o.hint.unwrap().contains("--add-port=6443/tcp"));
        assert_status("firewalld", &f, &Thresholds::defaults(Distribution::Rke2), Mode::Install, Status::Fail);
        f.services = ServiceFacts { firewalld_enabled: true, ..ServiceFacts::default() };
        assert_status("firewalld", &f, &k3s(), Mode::Install, Status::Warn);
    }

    #[test]
    fn nm_cloud_setup_enabled_fails() {
        let mut f = good();
        f.services.nm_cloud_setup_enabled = true;
        assert_status("nm-cloud-setup", &f, &k3s(), Mode::Install, Status::Fail);
    }

    #[test]
    fn existing_install_depends_on_mode() {
        let t = k3s();
        let mut f = good();
        assert_status("existing-install", &f, &t, Mode::Upgrade, Status::Fail);
        f.existing = vec![ExistingInstall {
            distribution: Distribution::K3s,
            paths: vec!["/usr/local/bin/k3s".into()],
            running: vec!["k3s-server".into()],
        }];
        let o = assert_status("existing-install", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("/usr/local/bin/k3s") && o.hint.unwrap().contains("airlock upgrade"));
        assert_status("existing-install", &f, &t, Mode::Join, Status::Fail);
        assert_status("existing-install", &f, &t, Mode::Upgrade, Status::Pass);
        f.existing[0].distribution = Distribution::Rke2;
        let o = assert_status("existing-install", &f, &t, Mode::Upgrade, Status::Fail);
        assert!(o.detail.contains("not an upgrade"));
    }

    #[test]
    fn a_rerun_of_an_airlock_install_continues_its_own_files_and_listeners() {
        let t = k3s();
        let mut f = good();
        f.existing = vec![ExistingInstall {
            distribution: Distribution::K3s,
            paths: vec!["/usr/local/bin/k3s".into()],
            running: vec!["k3s-server".into()],
        }];
        f.network.listeners = vec![Listener {
            protocol: Protocol::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port: 6443,
            inode: 7,
            process: Some("k3s-server".into()),
        }];
        assert_status("existing-install", &f, &t, Mode::Install, Status::Fail);
        assert_status("ports", &f, &t, Mode::Install, Status::Fail);
        f.airlock_journal = Some("/var/lib/airlock/journal.json".into());
        let o = assert_status("existing-install", &f, &t, Mode::Install, Status::Pass);
        assert!(o.detail.contains("laid down by airlock"), "{}", o.detail);
        assert_status("ports", &f, &t, Mode::Install, Status::Pass);
        // Our journal does not make another distribution's leftovers or a stranger's
        // listener acceptable.
        f.network.listeners[0].process = Some("nginx".into());
        assert_status("ports", &f, &t, Mode::Install, Status::Fail);
        f.existing[0].distribution = Distribution::Rke2;
        assert_status("existing-install", &f, &t, Mode::Install, Status::Fail);
    }

    #[test]
    fn fsync_latency_against_etcd_limit() {
        let t = k3s();
        let mut f = good();
        let FsyncFacts::Measured(m) = &mut f.fsync else { unreachable!() };
        m.p99_ms = 25.0;
        let o = assert_status("etcd-fsync", &f, &t, Mode::Install, Status::Fail);
        assert!(o.detail.contains("25.00 ms"));
        let FsyncFacts::Measured(m) = &mut f.fsync else { unreachable!() };
        m.p99_ms = 4.0;
        m.stopped_early = true;
        assert_status("etcd-fsync", &f, &t, Mode::Install, Status::Warn);
        f.fsync = FsyncFacts::Failed { dir: "/var/lib".into(), error: "Permission denied".into() };
        assert_status("etcd-fsync", &f, &t, Mode::Install, Status::Warn);
        f.fsync = FsyncFacts::NotRun;
        assert_eq!(status("etcd-fsync", &f, &t, Mode::Install), Status::Skipped);
        // Single-node K3s runs no etcd: no limit, nothing to judge even with a slow disk.
        f = good();
        let FsyncFacts::Measured(m) = &mut f.fsync else { unreachable!() };
        m.p99_ms = 500.0;
        let no_etcd = Thresholds { max_fsync_p99_ms: None, ..k3s() };
        let o = run("etcd-fsync", &f, &no_etcd, Mode::Install);
        assert_eq!(o.status, Status::Skipped);
        assert!(o.detail.contains("no etcd"));
    }

    #[test]
    fn join_token_must_exist_and_be_private_on_join() {
        let t = k3s();
        let mut f = good();
        assert!((CHECKS.iter().find(|c| c.id == "join-token").unwrap().run)(&f, &t, Mode::Install).is_none());
        assert_eq!(status("join-token", &f, &t, Mode::Join), Status::Skipped);
        let mut tok = JoinTokenFacts { path: "/root/cluster-token".into(), present: false, size_bytes: 0, mode: None };
        f.join_token = Some(tok.clone());
        let o = assert_status("join-token", &f, &t, Mode::Join, Status::Fail);
        assert!(o
            .hint
            .unwrap()
            .contains("scp <first-server>:/var/lib/airlock/secrets/cluster-token /root/cluster-token"));
        tok = JoinTokenFacts { present: true, size_bytes: 65, mode: Some(0o644), ..tok };
        f.join_token = Some(tok.clone());
        assert_status("join-token", &f, &t, Mode::Join, Status::Warn);
        f.join_token = Some(JoinTokenFacts { mode: Some(0o600), ..tok.clone() });
        assert_status("join-token", &f, &t, Mode::Join, Status::Pass);
        f.join_token = Some(JoinTokenFacts { size_bytes: 0, ..tok });
        assert_status("join-token", &f, &t, Mode::Join, Status::Fail);
    }

    #[test]
    fn join_reachability_is_skipped_with_a_reason_and_only_on_join() {
        let (f, t) = (good(), k3s());
        assert!((CHECKS.iter().find(|c| c.id == "join-server-reachable").unwrap().run)(&f, &t, Mode::Install).is_none());
        let o = run("join-server-reachable", &f, &t, Mode::Join);
        assert_eq!(o.status, Status::Skipped);
        assert!(o.detail.contains("6443"));
    }
}
