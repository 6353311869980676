//! K3s: what `install.sh` lays down (the binary, its links, the unit and its env file),
//! plus the config, registries, images and manifests, and our own teardown scripts.

use airlock_format::error::Result;

use super::scripts::{BIN, KILLALL, UNINSTALL};
use super::{charts, config_files, data_dirs, images, scripts, DistributionInput};
use crate::engine::layout::{Layout, StepGroup};

const SYSTEMD_DIR: &str = "/etc/systemd/system";

pub(super) fn render(input: &DistributionInput, binary: &str, shipped_images: &[String]) -> Result<Layout> {
    let mut layout = Layout::default();
    let server = input.role.is_server();
    let static_charts = server && charts::any_static(&input.charts);

    // install.sh: `chmod 755` the binary into /usr/local/bin and link the tools to it.
    layout.staged(BIN, 0o755, binary);
    for tool in ["kubectl", "crictl", "ctr"] {
        layout.link(format!("/usr/local/bin/{tool}"), "k3s");
    }
    config_files(&mut layout, input)?;
    data_dirs(&mut layout, input, static_charts);

    layout.in_group(StepGroup::Images, |l| images(l, input, shipped_images));
    if server {
        layout.in_group(StepGroup::Charts, |l| charts::helm_charts(l, input));
    }

    let unit = input.unit();
    let env = format!("{SYSTEMD_DIR}/{unit}.env");
    layout.file(format!("{SYSTEMD_DIR}/{unit}"), 0o644, scripts::k3s_unit(input, &env));
    // install.sh creates the env file 0600 with the K3S_* and proxy variables of its
    // caller; everything here is in config.yaml, so it only says so.
    layout.file(
        env,
        0o600,
        format!(
            "# Environment of {unit} (K3S_* and proxy variables), written by airlock.\n\
             # The configuration is in /etc/rancher/k3s/config.yaml.\n"
        ),
    );
    layout.file(KILLALL, 0o755, scripts::k3s_killall(input));
    layout.units.push(unit.to_string());
    // Last: its list of paths is the layout above, itself included.
    let uninstall = scripts::k3s_uninstall(input, &layout);
    layout.file(UNINSTALL, 0o755, uninstall);
    Ok(layout)
}
