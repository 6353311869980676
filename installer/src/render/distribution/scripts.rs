//! The K3s unit as `install.sh` writes it, and our own teardown scripts.
//!
//! K3s' `install.sh` writes `k3s-killall.sh` and `k3s-uninstall.sh` (on agents
//! `k3s-agent-uninstall.sh`); we do not run `install.sh`, so we write our own
//! equivalents under the same names, where K3s' documentation tells operators to find
//! them. The scripts are POSIX sh (they run on RHEL, Ubuntu and SLES alike); the tests check them
//! with `sh -n` and shellcheck.

use super::DistributionInput;

/// Where K3s' binary and the scripts written here live (the scripts name them).
pub(super) const BIN: &str = "/usr/local/bin/k3s";
pub(super) const KILLALL: &str = "/usr/local/bin/k3s-killall.sh";
/// K3s' `install.sh` names the uninstall script after the unit: `k3s-uninstall.sh` on
/// servers, `k3s-agent-uninstall.sh` on agents.
pub(super) const UNINSTALL_SERVER: &str = "/usr/local/bin/k3s-uninstall.sh";
pub(super) const UNINSTALL_AGENT: &str = "/usr/local/bin/k3s-agent-uninstall.sh";

/// This node's uninstall script.
pub fn uninstall_path(input: &DistributionInput) -> &'static str {
    if input.role.is_server() {
        UNINSTALL_SERVER
    } else {
        UNINSTALL_AGENT
    }
}

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

/// `k3s-killall.sh`: stops the unit, kills the containerd shims K3s started
/// (and everything below them), unmounts what pods and K3s' runtime mounted, and
/// removes the CNI's network namespaces, devices and iptables rules, as K3s' own
/// `k3s-killall.sh` does. Data on disk stays.
pub(super) fn k3s_killall(input: &DistributionInput) -> String {
    let data = input.data_dir().display().to_string();
    let unit = input.unit();
    format!(
        r#"#!/bin/sh
# k3s-killall.sh, written by airlock for K3s {version}.
#
# Stops K3s and every container it runs on this node, then removes the mounts, network
# namespaces, devices and iptables rules they leave behind, as K3s' own k3s-killall.sh
# does. Nothing on disk is deleted: run it before maintenance, or let the uninstall
# script run it.
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

/// `k3s-uninstall.sh` (`k3s-agent-uninstall.sh` on agents): removes what airlock
/// installed, exactly as `airlock uninstall` does, from the install's own record
/// ([`crate::state::UNINSTALL_LIST_PATH`], the inventory with its digests): a file goes
/// only while its digest says it is still what airlock wrote (SHA-256, or for files
/// holding secrets the inventory's HMAC keyed with the site key), a link only while it
/// still points where airlock pointed it, a directory only when empty. Anything else is
/// kept and named. The script does not depend on `layout`, so it is the same for every
/// install of this node's kind and role.
pub(super) fn k3s_uninstall(input: &DistributionInput) -> String {
    let data = input.data_dir().display().to_string();
    let unit = input.unit();
    let this = uninstall_path(input);
    format!(
        r#"#!/bin/sh
# {name}, written by airlock for K3s {version}.
#
# Removes what airlock installed on this node, as `airlock uninstall` does: the list
# {list} is the install's inventory, each file with the digest of
# what airlock wrote. A file that was changed since (or replaced) is kept and named, a
# link is removed only while it still points where airlock pointed it, a directory
# only when empty. K3s is stopped first with {killall}. What K3s itself wrote while it
# ran (cluster state under {data}, the kubeconfig /etc/rancher/k3s/k3s.yaml, /run/k3s,
# /var/lib/kubelet) stays, unless --purge is given: then it goes too, as K3s' own
# uninstall removes it. Last, airlock's state ({state}) goes.
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
list={list_q}
if [ ! -f "$list" ]; then
    echo "$0: $list is missing: nothing recorded to remove (already uninstalled?)" >&2
    exit 1
fi

# Stop K3s and its containers, unmount what they mounted.
if [ -x {killall_q} ]; then
    {killall_q}
fi

# The unit: disabled, and its enablement link gone (also when it was enabled under --root).
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable {unit_q} >/dev/null 2>&1 || true
    systemctl reset-failed {unit_q} >/dev/null 2>&1 || true
fi
rm -f {wants_q}

# The site key the digests of secret-bearing files are keyed with (HMAC-SHA256,
# RFC 2104). It never becomes a command's argument, where any local user would see
# it: the shell's own arithmetic and printf make the padded keys, and sha256sum reads
# them on stdin.
key=$(cat {key_q} 2>/dev/null || true)
case "$key" in
    *[!0-9a-f]* | "") key= ;;
esac
[ "${{#key}}" -eq 64 ] || key=
# The 64-byte block of the key XORed with $1, as printf octal escapes.
pad() {{
    k=$key
    out=
    i=0
    while [ "$i" -lt 64 ]; do
        if [ -n "$k" ]; then
            rest=${{k#??}}
            b=$((0x${{k%"$rest"}} ^ $1))
            k=$rest
        else
            b=$1
        fi
        out="$out\\$(printf '%03o' "$b")"
        i=$((i + 1))
    done
    printf '%s' "$out"
}}
# A digest (hex) as printf octal escapes.
octal() {{
    h=$1
    out=
    while [ -n "$h" ]; do
        rest=${{h#??}}
        out="$out\\$(printf '%03o' "$((0x${{h%"$rest"}}))")"
        h=$rest
    done
    printf '%s' "$out"
}}
if [ -n "$key" ]; then
    ipad=$(pad 54)
    opad=$(pad 92)
fi
kept=0
keep() {{
    echo "kept $1: $2" >&2
    kept=$((kept + 1))
}}
digest_of() {{
    case "$1" in
        sha256) sha256sum <"$2" | cut -d ' ' -f 1 ;;
        hmac-sha256)
            if [ -n "$key" ]; then
                inner=$({{ printf "$ipad"; cat "$2"; }} | sha256sum | cut -d ' ' -f 1)
                {{ printf "$opad"; printf "$(octal "$inner")"; }} | sha256sum | cut -d ' ' -f 1
            fi
            ;;
    esac
}}

# Files and links, then directories deepest first, in the order the list gives.
while read -r kind value path; do
    case "$kind" in
        sha256 | hmac-sha256)
            [ "$path" = {this_q} ] && continue
            if [ -L "$path" ] || {{ [ -e "$path" ] && [ ! -f "$path" ]; }}; then
                keep "$path" "no longer a file"
            elif [ -f "$path" ]; then
                have=$(digest_of "$kind" "$path")
                if [ -z "$have" ]; then
                    keep "$path" "its digest cannot be checked here (the site key is missing or damaged)"
                elif [ "$have" = "$value" ]; then
                    rm -f "$path"
                else
                    keep "$path" "changed since the install"
                fi
            fi
            ;;
        unverifiable)
            [ -e "$path" ] && keep "$path" "recorded without a digest, so an edit cannot be ruled out"
            ;;
        link)
            # Only our own link: an operator's kubectl (a file, or a link elsewhere) stays.
            if [ -L "$path" ] && [ "$(readlink "$path")" = "$value" ]; then
                rm -f "$path"
            fi
            ;;
        dir)
            rmdir "$path" 2>/dev/null || true
            ;;
    esac
done <"$list"

if [ "$purge" = true ]; then
    # K3s' own state, as K3s' uninstall removes it. --one-file-system: never into a
    # file system still mounted below (killall unmounted what K3s mounted).
    rm -rf --one-file-system {data_q} /etc/rancher/k3s /run/k3s /run/flannel /var/lib/kubelet /var/lib/cni
fi

# airlock's state (the list above included), then the directories that held it.
rm -rf --one-file-system {state_q}
while read -r kind value path; do
    [ "$kind" = state-dir ] && rmdir "$path" 2>/dev/null
done <<EOF_DIRS
{state_dirs}
EOF_DIRS

if command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi

# Last: this script itself.
rm -f {this_q}
if [ "$kept" -gt 0 ]; then
    echo "$0: $kept file(s) kept; remove them by hand once checked" >&2
fi
"#,
        name = this.rsplit('/').next().unwrap_or(this),
        version = input.version,
        list = crate::state::UNINSTALL_LIST_PATH,
        list_q = sq(crate::state::UNINSTALL_LIST_PATH),
        killall = KILLALL,
        killall_q = sq(KILLALL),
        unit_q = sq(unit),
        wants_q = sq(&format!("/etc/systemd/system/multi-user.target.wants/{unit}")),
        key_q = sq(crate::state::INVENTORY_KEY_PATH),
        this_q = sq(this),
        data = data,
        data_q = sq(&data),
        state = crate::state::STATE_DIR,
        state_q = sq(crate::state::STATE_DIR),
        state_dirs = state_parents(),
    )
}

/// The directories holding the state directory (`/var/lib`, `/var`), deepest first,
/// each removed only when empty, as `airlock uninstall` does.
fn state_parents() -> String {
    std::path::Path::new(crate::state::STATE_DIR)
        .ancestors()
        .skip(1)
        .filter(|a| a.parent().is_some())
        .map(|a| format!("state-dir - {}", a.display()))
        .collect::<Vec<_>>()
        .join("\n")
}
