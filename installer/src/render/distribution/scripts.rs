//! The K3s unit as `install.sh` writes it, and our own teardown scripts.
//!
//! K3s' `install.sh` writes `k3s-killall.sh` and `k3s-uninstall.sh`; we do not run
//! `install.sh`, so we write our own equivalents (contracts) under our own names. The
//! scripts are POSIX sh (they run on RHEL, Ubuntu and SLES alike); the tests check them
//! with `sh -n` and shellcheck.

use std::fmt::Write as _;

use super::DistributionInput;
use crate::engine::layout::Layout;

/// Where K3s' binary and the scripts written here live (the scripts name them).
pub(super) const BIN: &str = "/usr/local/bin/k3s";
pub(super) const KILLALL: &str = "/usr/local/bin/airlock-k3s-killall.sh";
pub(super) const UNINSTALL: &str = "/usr/local/bin/airlock-k3s-uninstall.sh";

/// Single-quotes `s` for sh.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `k3s.service` / `k3s-agent.service` with the settings of K3s' `install.sh`
/// (contracts): `Type=notify` (K3s tells systemd when it is ready), `KillMode=process`
/// and `Delegate=yes` (stopping K3s leaves the containers running and their cgroups to
/// containerd), unlimited tasks and files, restart forever, the two kernel modules
/// loaded first (`-`: a module built into the kernel is not an error).
pub(super) fn k3s_unit(input: &DistributionInput, env_file: &str) -> String {
    let command = if input.role.is_server() { "server" } else { "agent" };
    format!(
        "# Written by airlock for K3s {version}, as K3s' install.sh writes it.\n\
         [Unit]\n\
         Description=Lightweight Kubernetes\n\
         Documentation=https://k3s.io\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n\
         \n\
         [Service]\n\
         Type=notify\n\
         EnvironmentFile=-/etc/default/%N\n\
         EnvironmentFile=-/etc/sysconfig/%N\n\
         EnvironmentFile=-{env_file}\n\
         KillMode=process\n\
         Delegate=yes\n\
         User=root\n\
         # No per-service limits: their accounting costs the kernel; cgroups account per container.\n\
         LimitNOFILE=1048576\n\
         LimitNPROC=infinity\n\
         LimitCORE=infinity\n\
         TasksMax=infinity\n\
         TimeoutStartSec=0\n\
         Restart=always\n\
         RestartSec=5s\n\
         ExecStartPre=-/sbin/modprobe br_netfilter\n\
         ExecStartPre=-/sbin/modprobe overlay\n\
         ExecStart={BIN} {command}\n",
        version = input.version,
    )
}

/// `airlock-k3s-killall.sh`: stops the unit, kills the containerd shims K3s started
/// (and everything below them), unmounts what pods and K3s' runtime mounted, and
/// removes the CNI's network namespaces, devices and iptables rules, as K3s' own
/// `k3s-killall.sh` does. Data on disk stays.
pub(super) fn k3s_killall(input: &DistributionInput) -> String {
    let data = input.data_dir().display().to_string();
    let unit = input.unit();
    format!(
        r#"#!/bin/sh
# airlock-k3s-killall.sh, written by airlock for K3s {version}.
#
# Stops K3s and every container it runs on this node, then removes the mounts, network
# namespaces, devices and iptables rules they leave behind, as K3s' own k3s-killall.sh
# does. Nothing on disk is deleted: run it before maintenance, or let
# airlock-k3s-uninstall.sh run it.
set -u

if [ "$(id -u)" -ne 0 ]; then
    echo "$0: must run as root" >&2
    exit 1
fi

data_dir={data}

# 1. The unit. KillMode=process stops only K3s itself: the containers keep running.
if command -v systemctl >/dev/null 2>&1; then
    systemctl stop {unit} >/dev/null 2>&1 || true
fi

# 2. The containerd shims K3s started (their binaries live under the data dir) and
#    every process below them, all at once so none is re-parented and missed.
children() {{
    ps -e -o ppid= -o pid= | awk -v parent="$1" '$1 == parent {{ print $2 }}'
}}
with_descendants() {{
    for pid in "$@"; do
        echo "$pid"
        # shellcheck disable=SC2046 # one word per PID
        with_descendants $(children "$pid")
    done
}}
shims=$(ps -e -o pid= -o args= |
    awk -v dir="$data_dir/data/" 'index($2, dir) == 1 && $2 ~ /\/bin\/containerd-shim/ {{ print $1 }}')
if [ -n "$shims" ]; then
    # shellcheck disable=SC2046,SC2086 # one word per PID
    kill -9 $(with_descendants $shims) 2>/dev/null || true
fi

# 3. Mounts below K3s' runtime dir, the kubelet's dir and the CNI's network namespaces,
#    deepest first so nested mounts come off before their parents. Only below: a disk
#    mounted at /var/lib/kubelet itself stays.
unmount_below() {{
    awk -v prefix="$1" 'index($2, prefix) == 1 {{ print $2 }}' /proc/self/mounts | sort -r |
        while read -r mnt; do
            umount -f "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
        done
}}
unmount_below /run/k3s/
unmount_below /var/lib/kubelet/
unmount_below /run/netns/cni-

# 4. The CNI's (flannel's) network namespaces, devices and state.
if command -v ip >/dev/null 2>&1; then
    ip netns list 2>/dev/null | awk '/^cni-/ {{ print $1 }}' | while read -r ns; do
        ip netns delete "$ns" 2>/dev/null || true
    done
    ip -o link show 2>/dev/null | awk -F': ' '/ master cni0 / {{ sub(/@.*/, "", $2); print $2 }}' |
        while read -r dev; do
            ip link delete "$dev" 2>/dev/null || true
        done
    for dev in cni0 flannel.1 flannel-v6.1 flannel-wg flannel-wg-v6 kube-ipvs0; do
        ip link delete "$dev" 2>/dev/null || true
    done
fi
rm -rf /var/lib/cni/

# 5. The Kubernetes and CNI iptables rules; every other rule stays.
for tables in iptables ip6tables; do
    if command -v "$tables-save" >/dev/null 2>&1 && command -v "$tables-restore" >/dev/null 2>&1; then
        "$tables-save" | grep -v KUBE- | grep -v CNI- | grep -iv flannel | "$tables-restore" || true
    fi
done
"#,
        version = input.version,
        data = sq(&data),
        unit = sq(unit),
    )
}

/// `airlock-k3s-uninstall.sh`: removes exactly the paths of `layout` (the layout this
/// script is part of, itself last), nothing else unless `--purge` is given.
pub(super) fn k3s_uninstall(input: &DistributionInput, layout: &Layout) -> String {
    let data = input.data_dir().display().to_string();
    let mut s = format!(
        r#"#!/bin/sh
# airlock-k3s-uninstall.sh, written by airlock for K3s {version}.
#
# Removes exactly what airlock laid down for K3s on this node: the lists below were
# generated from the same layout that installed it. K3s is stopped first with
# airlock-k3s-killall.sh. What K3s itself wrote while it ran (cluster state and
# credentials under {data}, the kubeconfig /etc/rancher/k3s/k3s.yaml, /run/k3s,
# /var/lib/kubelet) is not airlock's and stays, unless --purge is given: then it goes
# too, as K3s' own uninstall removes it.
set -u

usage() {{
    echo "usage: $0 [--purge]" >&2
    exit 2
}}
purge=false
if [ $# -gt 1 ]; then
    usage
elif [ $# -eq 1 ]; then
    if [ "$1" = --purge ]; then purge=true; else usage; fi
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: must run as root" >&2
    exit 1
fi

# Stop K3s and its containers, unmount what they mounted.
if [ -x {killall} ]; then
    {killall}
fi

"#,
        version = input.version,
        killall = sq(KILLALL),
    );
    for unit in &layout.units {
        let _ = write!(
            s,
            "# The unit: disabled, and its enablement link gone (also when it was enabled under --root).\n\
             if command -v systemctl >/dev/null 2>&1; then\n    \
             systemctl disable {u} >/dev/null 2>&1 || true\n    \
             systemctl reset-failed {u} >/dev/null 2>&1 || true\n\
             fi\n\
             rm -f {wants}\n\n",
            u = sq(unit),
            wants = sq(&format!("/etc/systemd/system/multi-user.target.wants/{unit}")),
        );
    }
    s.push_str("# Files and links airlock laid down, newest first.\nrm -f");
    let paths = layout
        .files
        .iter()
        .map(|f| f.path.display().to_string())
        .chain(layout.links.iter().map(|l| l.link.display().to_string()))
        .filter(|p| p != UNINSTALL)
        .collect::<Vec<_>>();
    for p in paths.iter().rev() {
        let _ = write!(s, " \\\n    {}", sq(p));
    }
    let _ = write!(
        s,
        "\n\n\
         if [ \"$purge\" = true ]; then\n    \
         # K3s' own state, as K3s' uninstall removes it. --one-file-system: never into a\n    \
         # file system still mounted below (killall unmounted what K3s mounted).\n    \
         rm -rf --one-file-system {data} /etc/rancher/k3s /run/k3s /run/flannel /var/lib/kubelet /var/lib/cni\n\
         fi\n\n\
         # Directories airlock created, deepest first, each only if empty: whatever K3s or\n\
         # an operator put there stays.\n\
         for dir in",
        data = sq(&data),
    );
    let dirs = layout.dirs.iter().rev().map(|d| sq(&d.path.display().to_string())).collect::<Vec<_>>();
    let last = dirs.len().saturating_sub(1);
    for (i, d) in dirs.iter().enumerate() {
        let _ = write!(s, " \\\n    {d}{}", if i == last { ";" } else { "" });
    }
    if dirs.is_empty() {
        s.push(';');
    }
    let _ = write!(
        s,
        " do\n    rmdir \"$dir\" 2>/dev/null || true\ndone\n\n\
         if command -v systemctl >/dev/null 2>&1; then\n    \
         systemctl daemon-reload >/dev/null 2>&1 || true\n\
         fi\n\n\
         # Last: this script itself.\n\
         rm -f {}\n",
        sq(UNINSTALL)
    );
    s
}
