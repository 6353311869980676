//! Live mode end to end through the host seam: the embedded example is verified,
//! staged, planned and applied to a recording double that plays a running system, then
//! brought up — the distribution started and waited for, answers scripted as K3s would
//! give them. K3s itself cannot run here (no release binary on our machines); this
//! pins what airlock does around it: order, commands, and the deadline.

use airlock_installer::state;
use std::path::Path;
use std::time::{Duration, Instant};

use airlock_format::report::Silent;
use airlock_installer::bundle::trust::trusted_keys;
use airlock_installer::engine::{apply, ApplyOptions};
use airlock_installer::host::{CommandOutput, Host, HostCall, RecordingHost};
use airlock_installer::live::{bring_up, WaitOptions};
use airlock_installer::ops::install::prepare;
use airlock_installer::site::answers::Answers;
use airlock_tests::live::{expect_healthy_demo_endpoints, kubectl, TestClock};
use airlock_tests::{build_demo_bundle, demo_dir};

#[test]
fn a_live_install_lays_every_file_before_starting_k3s_then_waits_for_the_node_and_each_chart() {
    let d = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(d.path(), &[]);
    let keys = trusted_keys(&[demo_dir().join("keys/demo.pub")], Path::new("/")).unwrap();
    let answers = Answers::load(&demo_dir().join("answers.yaml")).unwrap();
    let host = RecordingHost::new(true).unwrap();
    // What a live system answers: systemctl succeeds; the API server comes up after a
    // while, then the node turns Ready; helm-controller's jobs finish one by one.
    host.expect_command(&["systemctl"], CommandOutput::ok(""));
    let node = kubectl(&["get", "node", "demo-node"]);
    let node: Vec<&str> = node.iter().map(String::as_str).collect();
    host.expect_command(&node, CommandOutput::ok("True"));
    host.expect_command_times(&node, CommandOutput::exit(1, "The connection to the server was refused"), 6);

    let prepared = prepare(&bundle, &keys, &answers, &host, &Silent).unwrap();
    assert_eq!(prepared.live.unit, "k3s.service");
    assert!(!prepared.live.charts.is_empty());
    for c in &prepared.live.charts {
        let job = kubectl(&["-n", "kube-system", "get", &format!("job/helm-install-{c}")]);
        let job: Vec<&str> = job.iter().map(String::as_str).collect();
        host.expect_command(&job, CommandOutput::ok("1/"));
        host.expect_command_times(&job, CommandOutput::ok("/"), 3);
    }
    let opts = ApplyOptions {
        overrides: Vec::new(),
        ..ApplyOptions::new(airlock_installer::state::STATE_DIR, "airlock install demo.airlock")
    };
    assert_eq!(opts.state_dir, Path::new(state::STATE_DIR));
    apply(&prepared.plan, &host, &opts, &mut |_| {}).unwrap();
    let clock = TestClock(std::cell::Cell::new(Instant::now()));
    let wait = WaitOptions { timeout: Duration::from_secs(600), poll: Duration::from_secs(5) };
    let up = bring_up(&host, &prepared.live, wait, &clock, &Silent).unwrap();
    assert_eq!(up.node_ready_after_s, 30, "six refused polls, five seconds apart");
    assert_eq!(up.charts.len(), prepared.live.charts.len());

    // Then every endpoint, over HTTPS against the site CA, with the ingress hosts
    // resolved to this node.
    let checks = airlock_installer::render::platform::wiring::https_checks(&answers, &prepared.staged.manifest.charts);
    assert_eq!(checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["keycloak", "minio", "app", "grafana"]);
    expect_healthy_demo_endpoints(&host);
    let ca = Path::new(airlock_installer::state::CA_CERT);
    let checked =
        airlock_installer::live::post_install_checks(&host, &checks, ca, answers.node.ip, wait, &clock, &Silent)
            .unwrap();
    assert_eq!(checked.len(), 4);
    // What they saw is kept for `airlock report`: each URL and that it answered.
    let kept = airlock_installer::live::EndpointChecks::load(&host).unwrap().expect("the checks are recorded");
    assert_eq!(kept.ca, ca);
    assert!(kept.checks.iter().all(|c| c.ok && c.seen.is_none()) && kept.checks.len() == 4, "{kept:?}");

    let calls = host.calls();
    let start = calls
        .iter()
        .position(|c| matches!(c, HostCall::Run { argv } if argv.join(" ") == "systemctl enable --now k3s.service"))
        .expect("k3s started");
    // Every file, the binary and the image archive included, is in place before K3s starts
    // (the record of what the endpoint checks saw can only come after).
    let record = Path::new(airlock_installer::live::ENDPOINT_CHECKS_PATH);
    let last_write = calls.iter().rposition(|c| {
        c.changes_host()
            && !matches!(c, HostCall::Run { .. } | HostCall::Lock { .. })
            && !matches!(c, HostCall::WriteFile { path, .. } if path == record)
    });
    assert!(last_write.unwrap() < start, "files written after the service started");
    for f in
        ["/usr/local/bin/k3s", "/etc/rancher/k3s/config.yaml", "/var/lib/rancher/k3s/agent/images/airlock-images.tar"]
    {
        assert!(host.root().join(f.trim_start_matches('/')).exists(), "{f}");
    }
    let runs: Vec<String> = calls[start..]
        .iter()
        .filter_map(|c| match c {
            HostCall::Run { argv } => Some(argv.join(" ")),
            _ => None,
        })
        .collect();
    let first_job = runs.iter().position(|r| r.contains("helm-install-")).unwrap();
    let last_job = runs.iter().rposition(|r| r.contains("helm-install-")).unwrap();
    let first_curl = runs.iter().position(|r| r.starts_with("curl ")).unwrap();
    assert!(last_job < first_curl, "endpoints are checked once every chart is installed: {runs:#?}");
    let last_node = runs.iter().rposition(|r| r.contains("get node demo-node")).unwrap();
    assert!(last_node < first_job, "charts are waited for once the node is Ready: {runs:#?}");
}
