//! What the distributions' own installers do on a hardened RHEL host, done the same
//! way: SELinux labels for the files laid down, and fapolicyd rules for RKE2.
//!
//! What the host is, is read through the host seam at plan time: the running SELinux
//! mode (`/sys/fs/selinux/enforce`, or under a target root the mode
//! `/etc/selinux/config` sets for its first boot) and whether fapolicyd runs (its
//! control fifo `/run/fapolicyd/fapolicyd.fifo` exists while it does).

use std::path::{Path, PathBuf};

use airlock_format::error::Result;
use airlock_format::manifest::DistributionKind;

use crate::engine::layout::{Layout, PlannedCommand};
use crate::host::Host;

/// RKE2's fapolicyd rules, under the name its installer gives them.
pub const FAPOLICYD_RULES: &str = "/etc/fapolicyd/rules.d/80-rke2.rules";
/// Exists while fapolicyd runs.
const FAPOLICYD_FIFO: &str = "/run/fapolicyd/fapolicyd.fifo";
/// Under a target root: SELinux relabels the whole file system at its first boot.
pub const AUTORELABEL: &str = "/.autorelabel";

/// The host as the hardening steps see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSecurity {
    /// SELinux enforces now (live) or will at the first boot (target root).
    pub selinux_enforcing: bool,
    pub fapolicyd_running: bool,
}

impl HostSecurity {
    pub fn read(host: &dyn Host) -> Result<Self> {
        let text = |p: &str| -> Result<String> {
            Ok(host.read_file(Path::new(p))?.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default())
        };
        let selinux_enforcing = if host.live() {
            text("/sys/fs/selinux/enforce")?.trim() == "1"
        } else {
            text("/etc/selinux/config")?
                .lines()
                .filter_map(|l| l.trim().strip_prefix("SELINUX="))
                .next_back()
                .is_some_and(|v| v.trim().trim_matches('"') == "enforcing")
        };
        let fapolicyd_running = host.live() && host.metadata(Path::new(FAPOLICYD_FIFO))?.is_some();
        Ok(Self { selinux_enforcing, fapolicyd_running })
    }
}

/// The files, and on the running system the commands, that fit `distribution` (the
/// distribution's layout, already rendered) to this host.
pub fn layout(sec: HostSecurity, live: bool, kind: DistributionKind, distribution: &Layout, data_dir: &Path) -> Layout {
    let mut out = Layout::default();
    if sec.fapolicyd_running && kind == DistributionKind::Rke2 {
        // What RKE2's installer allows: containerd, runc and the CNI plugins run from
        // these directories; a data directory elsewhere is allowed too.
        let mut dirs =
            vec!["/var/lib/rancher/".to_string(), "/opt/cni/".into(), "/run/k3s/".into(), "/var/lib/kubelet/".into()];
        let data = format!("{}/", data_dir.display());
        if !data.starts_with("/var/lib/rancher/") {
            dirs.push(data);
        }
        let mut rules = String::from("# RKE2's fapolicyd rules, as its installer writes them; written by airlock.\n");
        for d in dirs {
            rules.push_str(&format!("allow perm=any all : dir={d}\n"));
        }
        out.file(FAPOLICYD_RULES, 0o644, rules);
        out.commands.push(PlannedCommand {
            name: "fagenrules".into(),
            describe: format!("load the fapolicyd rules of {FAPOLICYD_RULES} and restart fapolicyd"),
            check: Some(vec!["fagenrules".into(), "--check".into()]),
            run: vec![
                vec!["fagenrules".into(), "--load".into()],
                vec!["systemctl".into(), "restart".into(), "fapolicyd.service".into()],
            ],
        });
    }
    if sec.selinux_enforcing {
        if live {
            // The binaries, scripts and units (copied files get their labels from where
            // they were written, not from the policy) and the data directory.
            let mut paths: Vec<PathBuf> = distribution
                .files
                .iter()
                .map(|f| f.path.clone())
                .chain(distribution.links.iter().map(|l| l.link.clone()))
                .filter(|p| ["/usr/local", "/opt/rke2", "/etc/systemd/system"].iter().any(|d| p.starts_with(d)))
                .collect();
            paths.push(data_dir.to_path_buf());
            paths.sort();
            paths.dedup();
            let with = |flags: &[&str]| -> Vec<String> {
                let mut v: Vec<String> =
                    std::iter::once("restorecon").chain(flags.iter().copied()).map(String::from).collect();
                v.extend(paths.iter().map(|p| p.display().to_string()));
                v
            };
            out.commands.push(PlannedCommand {
                name: "restorecon".into(),
                describe: format!(
                    "restore the SELinux labels of {} paths (binaries, units, data directory)",
                    paths.len()
                ),
                check: Some(with(&["-R", "-i", "-n", "-v"])),
                run: vec![with(&["-R", "-i"])],
            });
        } else {
            // No policy to ask in a target root: the image relabels at its first boot.
            out.file(AUTORELABEL, 0o644, Vec::new());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout_steps;
    use crate::engine::StepState;
    use crate::host::{CommandOutput, HostCall, Perms, RecordingHost};

    fn rke2_layout() -> Layout {
        let mut l = Layout::default();
        l.staged("/usr/local/bin/rke2", 0o755, "unpacked/rke2/bin/rke2");
        l.staged(
            "/usr/local/lib/systemd/system/rke2-server.service",
            0o644,
            "unpacked/rke2/lib/systemd/system/rke2-server.service",
        );
        l.file("/etc/rancher/rke2/config.yaml", 0o600, "x");
        l
    }

    fn put(host: &RecordingHost, path: &str, text: &str) {
        host.write_file(Path::new(path), &mut text.as_bytes(), Perms::mode(0o644)).unwrap();
    }

    /// Applies the commands of `layout` as an install would, returning what ran.
    fn run_commands(host: &RecordingHost, layout: &Layout) -> Vec<String> {
        host.take_calls();
        for step in layout_steps("rke2", layout, Path::new("/staging")) {
            if !step.id().starts_with("rke2/run/") {
                continue;
            }
            if let StepState::Pending { .. } = step.check(host).unwrap() {
                step.apply(host).unwrap();
            }
        }
        host.calls()
            .into_iter()
            .filter_map(|c| match c {
                HostCall::Run { argv } => Some(argv.join(" ")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn distribution_on_a_live_selinux_fapolicyd_host_labels_files_and_loads_rke2_rules() {
        let host = RecordingHost::new(true).unwrap();
        put(&host, "/sys/fs/selinux/enforce", "1");
        put(&host, FAPOLICYD_FIFO, "");
        host.expect_command(&["restorecon"], CommandOutput::ok(""));
        // The dry check finds labels to fix; the rules need loading.
        host.expect_command(
            &["restorecon", "-R", "-i", "-n"],
            CommandOutput::ok("Would relabel /usr/local/bin/rke2\n"),
        );
        host.expect_command(&["fagenrules"], CommandOutput::ok(""));
        host.expect_command(&["fagenrules", "--check"], CommandOutput::exit(1, "Rules have changed"));
        host.expect_command(&["systemctl", "restart", "fapolicyd.service"], CommandOutput::ok(""));
        let sec = HostSecurity::read(&host).unwrap();
        assert_eq!(sec, HostSecurity { selinux_enforcing: true, fapolicyd_running: true });
        let data = Path::new("/var/lib/rancher/rke2");
        let l = layout(sec, true, DistributionKind::Rke2, &rke2_layout(), data);
        let rules = l.files.iter().find(|f| f.path == Path::new(FAPOLICYD_RULES)).expect("rules file");
        let crate::engine::layout::FileSource::Inline(b) = &rules.source else { panic!() };
        let text = String::from_utf8_lossy(b);
        assert!(
            text.contains("allow perm=any all : dir=/var/lib/rancher/\n") && text.contains("dir=/run/k3s/"),
            "{text}"
        );
        let ran = run_commands(&host, &l);
        let apply = |prefix: &str| {
            ran.iter().position(|r| r.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {ran:#?}"))
        };
        assert!(ran.contains(
            &"restorecon -R -i /usr/local/bin/rke2 /usr/local/lib/systemd/system/rke2-server.service /var/lib/rancher/rke2"
                .to_string()
        ), "{ran:#?}");
        assert!(apply("fagenrules --load") < apply("systemctl restart fapolicyd.service"));
        assert!(!ran.iter().any(|r| r.contains("/etc/rancher")), "only binaries, units and data: {ran:#?}");
    }

    #[test]
    fn distribution_on_a_plain_host_nothing_is_labelled_or_loaded() {
        let host = RecordingHost::new(true).unwrap();
        put(&host, "/sys/fs/selinux/enforce", "0");
        let sec = HostSecurity::read(&host).unwrap();
        assert_eq!(sec, HostSecurity::default());
        let l = layout(sec, true, DistributionKind::Rke2, &rke2_layout(), Path::new("/var/lib/rancher/rke2"));
        assert_eq!(l, Layout::default());
        assert!(run_commands(&host, &l).is_empty());
    }

    #[test]
    fn distribution_under_a_target_root_with_selinux_enforcing_relabels_at_first_boot() {
        let host = RecordingHost::new(false).unwrap();
        put(&host, "/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n");
        let sec = HostSecurity::read(&host).unwrap();
        assert!(sec.selinux_enforcing && !sec.fapolicyd_running);
        let l = layout(sec, false, DistributionKind::K3s, &rke2_layout(), Path::new("/var/lib/rancher/k3s"));
        assert!(l.commands.is_empty(), "nothing runs in a target root");
        assert_eq!(l.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>(), [PathBuf::from(AUTORELABEL)]);
    }

    #[test]
    fn distribution_labels_already_right_are_not_restored_again() {
        let host = RecordingHost::new(true).unwrap();
        put(&host, "/sys/fs/selinux/enforce", "1");
        host.expect_command(&["restorecon"], CommandOutput::ok(""));
        let l =
            layout(HostSecurity::read(&host).unwrap(), true, DistributionKind::K3s, &rke2_layout(), Path::new("/d"));
        let ran = run_commands(&host, &l);
        assert_eq!(ran.len(), 1, "only the dry check: {ran:#?}");
        assert!(ran[0].starts_with("restorecon -R -i -n -v"));
    }
}
