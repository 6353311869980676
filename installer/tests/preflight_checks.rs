//! Preflight against fixture root trees: the collector reads `<root>/proc`, `/sys`,
//! `/etc`, … exactly as it reads a live host, and the checks judge what it found. One
//! test also runs the collector on this machine's real `/`.

// Tests lay out fixtures and hostile roots with std::fs and run real tools.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_format::ErrorKind;
use airlock_installer::site::preflight::{
    collect, run, CollectOptions, Distribution, Facts, FsyncFacts, FsyncProbeOptions, Mode, ModuleState, Overall,
    PreflightReport, Status, Thresholds,
};

const RELEASE: &str = "5.14.0-427.el9.x86_64";

const TCP_HEADER: &str =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

/// A `/proc/net/tcp` LISTEN line on 0.0.0.0:`port` for socket `inode`.
fn tcp_listen(sl: u32, port: u16, inode: u64) -> String {
    format!("{sl:4}: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")
}

/// A host in a temp directory that passes every check for a K3s install.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn healthy() -> Self {
        let h = Host { dir: tempfile::tempdir().unwrap() };
        let cpu = "vendor_id\t: GenuineIntel\nmodel name\t: Fixture Xeon\n\
                   flags\t\t: fpu sse2 pni ssse3 cx16 sse4_1 sse4_2 popcnt lahf_lm avx2\n\n";
        h.write("proc/cpuinfo", &(0..4).map(|i| format!("processor\t: {i}\n{cpu}")).collect::<String>());
        h.write(
            "proc/meminfo",
            "MemTotal:       16303428 kB\nMemFree:         8000000 kB\nMemAvailable:   12000000 kB\n",
        );
        h.write("proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
        h.write("proc/sys/kernel/osrelease", &format!("{RELEASE}\n"));
        h.write("proc/sys/kernel/hostname", "node1\n");
        h.write("etc/hostname", "node1\n");
        h.write("etc/hosts", "127.0.0.1 localhost\n10.0.0.5 node1.site.example node1\n");
        h.write(
            "proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n",
        );
        h.write("proc/net/ipv6_route", "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n");
        h.write(
            "proc/net/fib_trie",
            "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
             \x20    +-- 10.0.0.0/24 2 0 2\n        |-- 10.0.0.5\n           /32 host LOCAL\n\
             \x20    +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n",
        );
        // sshd listens on 22, which is none of K3s's business.
        h.write("proc/net/tcp", &format!("{TCP_HEADER}{}", tcp_listen(0, 22, 1001)));
        h.write("proc/net/udp", TCP_HEADER);
        h.process(700, "sshd", &[1001]);
        h.write("proc/modules", "overlay 151552 3 - Live 0x0000000000000000\n");
        h.write(&format!("lib/modules/{RELEASE}/modules.builtin"), "kernel/fs/ext4/ext4.ko\n");
        h.write(
            &format!("lib/modules/{RELEASE}/modules.dep"),
            "kernel/fs/overlayfs/overlay.ko.xz:\nkernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz\n",
        );
        h.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
        h.write("etc/resolv.conf", "search site.example\nnameserver 10.0.0.2\n");
        h.write("run/systemd/timesync/synchronized", "");
        h.write("proc/self/mounts", "/dev/sda1 / xfs rw,relatime 0 0\nproc /proc proc rw 0 0\n");
        h.write("proc/sys/crypto/fips_enabled", "0\n");
        fs::create_dir_all(h.path("var/lib")).unwrap();
        h
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// `/proc/<pid>/comm` and `fd/` links to the given socket inodes.
    fn process(&self, pid: u32, comm: &str, sockets: &[u64]) {
        self.write(&format!("proc/{pid}/comm"), &format!("{comm}\n"));
        let fd = self.path(&format!("proc/{pid}/fd"));
        fs::create_dir_all(&fd).unwrap();
        for (i, inode) in sockets.iter().enumerate() {
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), fd.join((i + 3).to_string())).unwrap();
        }
    }

    fn data_dir(&self) -> PathBuf {
        // Not created yet, as on a fresh host: the collector measures /var/lib.
        self.path("var/lib/rancher/k3s")
    }

    fn collect(&self) -> Facts {
        let opts = CollectOptions {
            fsync_probe: Some(FsyncProbeOptions { writes: 5, block_bytes: 2300, time_budget: Duration::from_secs(2) }),
            ..CollectOptions::default()
        };
        collect(self.dir.path(), &self.data_dir(), &opts)
    }

    fn report(&self, mode: Mode, overrides: &[&str]) -> PreflightReport {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let mut facts = self.collect();
        // The fixture's tree sits on the build machine's real filesystem; how full that
        // happens to be is not what these tests are about (the disk check's own verdicts
        // are pinned in the library's unit tests). A roomy, barely used disk:
        if let Some(d) = facts.disk.as_mut() {
            d.total_bytes = 1 << 40;
            d.available_bytes = (1 << 40) - (1 << 30);
        }
        run(&facts, &thresholds(), mode, &overrides).unwrap()
    }
}

fn thresholds() -> Thresholds {
    Thresholds {
        min_free_disk_bytes: 1 << 20,
        // These tests are about what the collector reads; the shared build machine's
        // disk latency is not under test here.
        max_fsync_p99_ms: Some(60_000.0),
        ..Thresholds::defaults(Distribution::K3s)
    }
}

fn check<'r>(r: &'r PreflightReport, id: &str) -> &'r airlock_installer::site::preflight::CheckResult {
    r.get(id).unwrap_or_else(|| panic!("no check {id} in {:#?}", r.checks))
}

#[test]
fn collector_reads_the_fixture_tree() {
    let h = Host::healthy();
    let f = h.collect();
    assert!(!f.live, "a fixture root must not be mixed with the live kernel's answers");
    assert_eq!(f.cpu.count, Some(4));
    assert_eq!(f.cpu.arch.as_deref(), Some("x86_64"));
    assert_eq!(f.memory.as_ref().unwrap().total_kib, 16303428);
    assert_eq!(f.swap.as_deref(), Some(&[][..]));
    assert_eq!(f.kernel_release.as_deref(), Some(RELEASE));
    assert_eq!(f.cgroup.controllers, ["cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma"]);
    assert_eq!(f.modules.states["overlay"], ModuleState::Loaded);
    assert_eq!(f.modules.states["br_netfilter"], ModuleState::Loadable);
    assert_eq!(f.network.ipv4_default_routes[0].gateway, Some("10.0.0.1".parse().unwrap()));
    assert!(f.network.ipv6_default_routes.is_empty(), "lo reject routes are not default routes");
    let addrs: Vec<String> = f.network.ipv4_addresses.iter().map(|a| a.address.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.5", "127.0.0.1"]);
    let ssh = f.network.listeners.iter().find(|l| l.port == 22).unwrap();
    assert_eq!(ssh.process.as_deref(), Some("sshd"));
    assert_eq!(f.hostname.name.as_deref(), Some("node1"));
    assert_eq!(f.hostname.hosts_file, ["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]);
    assert!(f.time.timesyncd_synchronized);
    let disk = f.disk.as_ref().unwrap();
    assert_eq!(disk.measured, h.path("var/lib"));
    assert!(disk.available_bytes > 0);
    match &f.fsync {
        FsyncFacts::Measured(m) => {
            assert_eq!(m.samples, 5);
            assert_eq!(m.dir, h.path("var/lib"));
        }
        other => panic!("fsync probe: {other:?}"),
    }
    assert_eq!(fs::read_dir(h.path("var/lib")).unwrap().count(), 0, "the probe left its file behind");
    assert!(f.existing.is_empty());
}

#[test]
fn a_healthy_fixture_passes() {
    let r = Host::healthy().report(Mode::Install, &[]);
    let not_pass: Vec<_> = r.checks.iter().filter(|c| c.status != Status::Pass).collect();
    assert!(not_pass.is_empty(), "{not_pass:#?}");
    assert_eq!(r.overall, Overall::Pass);
}

/// A hardened RHEL host as the collector reads it: fapolicyd running, `/usr/local` on
/// a read-only mount of its own, FIPS mode on, and the CIS kernel settings of a stock
/// kernel.
#[test]
fn distribution_a_hardened_rhel_fixture_is_read_and_judged() {
    let h = Host::healthy();
    h.process(900, "fapolicyd", &[]);
    h.write("proc/self/mounts", "/dev/sda1 / xfs rw 0 0\n/dev/sda3 /usr/local xfs ro,nodev 0 0\n");
    h.write("proc/sys/crypto/fips_enabled", "1\n");
    h.write("proc/sys/vm/overcommit_memory", "0\n");
    let f = h.collect();
    assert!(f.hardening.fapolicyd_running);
    assert_eq!(
        f.hardening.usr_local,
        Some(airlock_installer::site::preflight::UsrLocalMount { mount_point: true, read_only: true })
    );
    assert_eq!(f.hardening.fips, Some(true));
    assert_eq!(f.sysctls.get("vm.overcommit_memory").map(String::as_str), Some("0"));
    let r = h.report(Mode::Install, &[]);
    for (id, want) in [("fapolicyd", Status::Warn), ("usr-local", Status::Fail), ("fips", Status::Warn)] {
        assert_eq!(r.get(id).unwrap().status, want, "{id}: {:#?}", r.get(id));
    }
}

#[test]
fn no_default_route_fails_with_the_k3s_1144_hint() {
    let h = Host::healthy();
    h.write("proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n");
    let r = h.report(Mode::Install, &[]);
    let c = check(&r, "default-route");
    assert_eq!(c.status, Status::Fail);
    let hint = c.hint.as_deref().unwrap();
    assert!(hint.contains("k3s#1144"), "{hint}");
    assert!(hint.contains("ip route add default via <gateway>"), "{hint}");
    assert!(hint.contains("ip link add dummy0 type dummy"), "{hint}");
    assert_eq!(r.overall, Overall::Fail);
}

#[test]
fn swap_on_warns_because_k3s_runs_but_memory_accounting_suffers() {
    let h = Host::healthy();
    h.write("proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/swap.img  file  4194300  1024  -2\n");
    let r = h.report(Mode::Install, &[]);
    let c = check(&r, "swap");
    assert_eq!(c.status, Status::Warn);
    assert!(c.detail.contains("/swap.img"));
    assert!(c.hint.as_deref().unwrap().contains("swapoff -a"));
    assert_eq!(r.overall, Overall::Warn, "a warning does not block");
}

#[test]
fn a_listener_on_6443_fails_ports_naming_the_port() {
    let h = Host::healthy();
    h.write("proc/net/tcp", &format!("{TCP_HEADER}{}{}", tcp_listen(0, 22, 1001), tcp_listen(1, 6443, 2002)));
    h.process(900, "haproxy", &[2002]);
    let r = h.report(Mode::Install, &[]);
    let c = check(&r, "ports");
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("6443/tcp") && c.detail.contains("haproxy"), "{}", c.detail);
    assert!(!c.detail.contains("22/tcp"));
    // A foreign process is not the existing install's own listener, even on upgrade.
    h.write("usr/local/bin/k3s", "stand-in");
    assert_eq!(check(&h.report(Mode::Upgrade, &[]), "ports").status, Status::Fail);
}

#[test]
fn loopback_only_resolv_conf_fails() {
    let h = Host::healthy();
    h.write("etc/resolv.conf", "nameserver 127.0.0.53\noptions edns0 trust-ad\n");
    let r = h.report(Mode::Install, &[]);
    let c = check(&r, "nameserver");
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("127.0.0.53"));
    assert!(c.hint.as_deref().unwrap().contains("resolv-conf"));

    // systemd-resolved's upstream list is what K3s itself falls back to.
    h.write("run/systemd/resolve/resolv.conf", "nameserver 10.0.0.2\n");
    assert_eq!(check(&h.report(Mode::Install, &[]), "nameserver").status, Status::Pass);
}

#[test]
fn selinux_enforcing_without_k3s_selinux_fails_naming_the_rpms() {
    let h = Host::healthy();
    h.write("sys/fs/selinux/enforce", "1");
    h.write("etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n");
    h.write("var/lib/selinux/targeted/active/modules/200/container/cil", "");
    let r = h.report(Mode::Install, &[]);
    let c = check(&r, "selinux");
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("k3s-selinux"), "{}", c.detail);
    assert!(c.hint.as_deref().unwrap().contains("k3s-selinux-*.rpm"));

    h.write("var/lib/selinux/targeted/active/modules/200/k3s/cil", "");
    assert_eq!(check(&h.report(Mode::Install, &[]), "selinux").status, Status::Pass);
}

#[test]
fn an_existing_k3s_fails_install_and_passes_upgrade() {
    let h = Host::healthy();
    h.write("usr/local/bin/k3s", "stand-in for the k3s binary");
    // The running install holds its own ports; on upgrade that is expected.
    h.write("proc/net/tcp", &format!("{TCP_HEADER}{}{}", tcp_listen(0, 22, 1001), tcp_listen(1, 6443, 3003)));
    h.process(1200, "k3s-server", &[3003]);

    let install = h.report(Mode::Install, &[]);
    let c = check(&install, "existing-install");
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("/usr/local/bin/k3s") && c.detail.contains("k3s-server"), "{}", c.detail);
    assert_eq!(check(&install, "ports").status, Status::Fail);

    let upgrade = h.report(Mode::Upgrade, &[]);
    assert_eq!(check(&upgrade, "existing-install").status, Status::Pass);
    assert_eq!(check(&upgrade, "ports").status, Status::Pass);
    assert_eq!(upgrade.overall, Overall::Pass);
}

#[test]
fn overriding_a_failing_check_by_name_marks_it_overridden_and_lists_it() {
    let h = Host::healthy();
    h.write("proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n");
    let r = h.report(Mode::Install, &["default-route"]);
    assert_eq!(check(&r, "default-route").status, Status::Overridden);
    assert!(r.may_proceed());
    assert_eq!(r.overall, Overall::Warn);
    let journaled: Vec<_> = r.applied_overrides().collect();
    assert_eq!(journaled.len(), 1);
    assert_eq!(journaled[0].id, "default-route");
    assert_eq!(journaled[0].status_before, Some(Status::Fail));
}

#[test]
fn an_unknown_override_name_is_an_error_naming_it() {
    let h = Host::healthy();
    let err = run(&h.collect(), &thresholds(), Mode::Install, &["no-such-check".to_string()]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Input);
    assert!(err.to_string().contains("`no-such-check`"), "{err}");
    assert!(err.to_string().contains("hint:"), "{err}");
}

#[test]
fn a_missing_module_and_a_running_firewalld_are_seen() {
    let h = Host::healthy();
    h.write(&format!("lib/modules/{RELEASE}/modules.dep"), "kernel/fs/overlayfs/overlay.ko.xz:\n");
    h.write("run/firewalld.pid", "812\n");
    h.process(812, "firewalld", &[]);
    let r = h.report(Mode::Install, &[]);
    assert_eq!(check(&r, "kernel-modules").status, Status::Fail);
    assert!(check(&r, "kernel-modules").detail.contains("br_netfilter"));
    assert_eq!(check(&r, "firewalld").status, Status::Warn);

    let rke2 = Thresholds { distribution: Distribution::Rke2, ..thresholds() };
    let r = run(&h.collect(), &rke2, Mode::Install, &[]).unwrap();
    assert_eq!(check(&r, "firewalld").status, Status::Fail);
}

#[test]
fn a_joining_node_needs_the_token_file_copied_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let h = Host::healthy();
    let opts = CollectOptions {
        fsync_probe: None,
        join_token_file: Some("/root/cluster-token".into()),
        ..CollectOptions::default()
    };
    let judge = || run(&collect(h.dir.path(), &h.data_dir(), &opts), &thresholds(), Mode::Join, &[]).unwrap();
    let r = judge();
    assert_eq!(check(&r, "join-token").status, Status::Fail);
    assert_eq!(check(&r, "join-server-reachable").status, Status::Skipped);

    h.write("root/cluster-token", "K10secret::server:token\n");
    fs::set_permissions(h.path("root/cluster-token"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(check(&judge(), "join-token").status, Status::Warn);
    fs::set_permissions(h.path("root/cluster-token"), fs::Permissions::from_mode(0o600)).unwrap();
    let r = judge();
    assert_eq!(check(&r, "join-token").status, Status::Pass);
    let json = serde_json::to_string(&collect(h.dir.path(), &h.data_dir(), &opts)).unwrap();
    assert!(!json.contains("K10secret"), "the token's content must never reach the facts");
}

#[test]
fn every_check_id_is_documented() {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/preflight.md")).unwrap();
    for id in airlock_installer::site::preflight::check_ids() {
        assert!(doc.contains(&format!("| `{id}` |")), "docs/preflight.md has no row for `{id}`");
    }
}

#[test]
fn collect_on_this_machine_returns_sane_facts() {
    let data = tempfile::tempdir().unwrap();
    let opts = CollectOptions {
        fsync_probe: Some(FsyncProbeOptions { writes: 20, ..FsyncProbeOptions::default() }),
        ..CollectOptions::default()
    };
    let f = collect(Path::new("/"), data.path(), &opts);
    assert!(f.live);
    assert!(f.cpu.count.unwrap_or(0) >= 1, "{:?}", f.cpu);
    assert!(f.memory.as_ref().map(|m| m.total_kib).unwrap_or(0) > 0);
    assert!(f.kernel_release.is_some());
    assert!(f.hostname.name.is_some());
    match &f.fsync {
        FsyncFacts::Measured(m) => {
            assert!(m.p99_ms > 0.0, "{m:?}");
            assert_eq!(m.samples, 20);
        }
        other => panic!("fsync probe on this machine: {other:?}"),
    }
    assert_eq!(fs::read_dir(data.path()).unwrap().count(), 0, "the probe left its file behind");
    // Every mode produces a report; the verdicts depend on this machine.
    for mode in [Mode::Install, Mode::Join, Mode::Upgrade] {
        let r = run(&f, &Thresholds::defaults(Distribution::K3s), mode, &[]).unwrap();
        assert!(r.checks.iter().all(|c| !c.detail.is_empty()));
    }
}
