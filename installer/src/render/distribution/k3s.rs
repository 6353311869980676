//! K3s: what `install.sh` lays down (the binary, its links, the unit and its env file),
//! plus the config, registries, images and manifests, and the teardown scripts under
//! K3s' own names.

use airlock_format::error::Result;

use super::scripts::{uninstall_path, BIN, KILLALL};
use super::{charts, config_files, data_dirs, images, scripts, DistributionInput};
use crate::engine::layout::{Layout, StepGroup};

const SYSTEMD_DIR: &str = "/etc/systemd/system";

pub(super) fn render(input: &DistributionInput, binary: &str, shipped_images: &[String]) -> Result<Layout> {
    let mut layout = Layout::default();
    let server = input.role.is_server();
    let static_charts = server && charts::any_static(&input.charts);

    // install.sh: `chmod 755` the binary into /usr/local/bin and link the tools to it.
    layout.staged(BIN, 0o755, binary);
    // Skipped where the name is already on PATH, as install.sh does.
    for tool in ["kubectl", "crictl", "ctr"] {
        layout.tool_link(format!("/usr/local/bin/{tool}"), "k3s");
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
    // caller; the K3S_* settings are all in config.yaml, the proxy ones come here.
    super::env_file(&mut layout, &env, input);
    layout.file(KILLALL, 0o755, scripts::k3s_killall(input));
    layout.units.push(unit.to_string());
    // It reads what to remove from the install's inventory (all of it, PKI and
    // platform included), not from this layout.
    layout.file(uninstall_path(input), 0o755, scripts::k3s_uninstall(input));
    Ok(layout)
}
