//! Live mode: once the plan is applied to the running host, start the distribution and
//! wait until the cluster has taken the platform — the node `Ready`, then every
//! `HelmChart`'s install job succeeded — with progress and a deadline.
//!
//! Everything goes through [`Host::run`] (systemctl, kubectl), so tests drive the very
//! same code with the recording double, scripting what K3s/RKE2 would answer; and
//! through a [`Clock`], so a test's ten-minute wait takes no time. Under `--root`
//! nothing is started: the image boots the units it was given.
//!
//! The waits are idempotent: a re-run after a timeout (or a reboot) starts the unit
//! again (a no-op when it runs) and re-reads the state from the top.

use std::time::{Duration, Instant};

use airlock_format::error::{Error, ErrorKind, Result};
use airlock_format::manifest::DistributionKind;
use airlock_format::report::{Event, Reporter};
use serde::{Deserialize, Serialize};

use crate::host::{Host, Kube};

/// The namespace the `HelmChart` objects live in: where K3s and RKE2 keep their own,
/// and exempt from the CIS profile's restricted Pod Security (the helm Jobs run there).
pub const HELM_CHART_NAMESPACE: &str = "kube-system";

/// What to start and what to wait for on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTarget {
    pub kind: DistributionKind,
    /// The systemd unit (`k3s.service`, `rke2-agent.service`).
    pub unit: String,
    /// The Kubernetes node name.
    pub node: String,
    /// Servers only: the kubectl binary and the admin kubeconfig the distribution
    /// writes; agents have no API credentials, so only their unit is waited for.
    pub kubectl: Option<Kube>,
    /// `HelmChart` objects whose install jobs must succeed (servers only).
    pub charts: Vec<String>,
    /// Kernel settings the distribution refuses to start without (RKE2's CIS profile):
    /// applied from the `sysctl.d` file the plan wrote, then read back, before the unit
    /// is first started.
    #[serde(default)]
    pub sysctl: Option<SysctlApply>,
}

/// A `sysctl.d` file to apply before the first start, and what `/proc/sys` must then say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlApply {
    /// The file the plan wrote (`/etc/sysctl.d/60-rke2-cis.conf`).
    pub file: std::path::PathBuf,
    /// `(key, value)`: `vm.overcommit_memory` must read `1`, ...
    pub expect: Vec<(String, String)>,
}

/// How long to wait and how often to look.
#[derive(Clone, Copy, Debug)]
pub struct WaitOptions {
    /// For the whole bring-up: node and every chart.
    pub timeout: Duration,
    pub poll: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        // Image import on first start and a dozen chart installs take minutes on a
        // slow disk; twenty is generous without letting a broken site hang forever.
        Self { timeout: Duration::from_secs(20 * 60), poll: Duration::from_secs(5) }
    }
}

/// Time, as a seam: tests advance a fake clock instead of sleeping.
pub trait Clock {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration);
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// What the bring-up saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveReport {
    pub unit: String,
    /// Seconds from start until the node was Ready (servers) or the unit active (agents).
    pub node_ready_after_s: u64,
    /// Each chart and the seconds until its install job succeeded.
    pub charts: Vec<(String, u64)>,
}

/// Starts the unit and waits for the node and the charts. Refuses on a host that is
/// not live: nothing is started under a target root.
pub fn bring_up(
    host: &dyn Host,
    target: &LiveTarget,
    opts: WaitOptions,
    clock: &dyn Clock,
    reporter: &dyn Reporter,
) -> Result<LiveReport> {
    if !host.live() {
        return Err(Error::input(
            host.root().display().to_string(),
            "services are started only on the running system, not in a target root",
        )
        .with_hint("boot the target root; its units are enabled"));
    }
    let start = clock.now();
    let deadline = start + opts.timeout;
    if let Some(sysctl) = &target.sysctl {
        reporter.event(Event::Phase { name: &format!("applying {}", sysctl.file.display()), total: None });
        apply_sysctl(host, sysctl)?;
    }
    reporter.event(Event::Phase { name: &format!("starting {}", target.unit), total: None });
    // `enable --now`: RKE2's documented way to start (contracts), and idempotent.
    host.run(&["systemctl", "enable", "--now", &target.unit])?.checked(&["systemctl", "enable", "--now"])?;

    let node_waiting = match &target.kubectl {
        Some(_) => format!("node {} to be Ready", target.node),
        None => format!("{} to be active", target.unit),
    };
    reporter.event(Event::Phase { name: &format!("waiting for {node_waiting}"), total: None });
    wait(clock, deadline, opts.poll, || match &target.kubectl {
        Some(k) => node_ready(host, k, &target.node),
        None => unit_active(host, &target.unit),
    })
    .map_err(|seen| timed_out(target, &node_waiting, &seen, opts.timeout))?;
    let node_ready_after_s = clock.now().duration_since(start).as_secs();

    let mut charts = Vec::new();
    if let Some(k) = &target.kubectl {
        for chart in &target.charts {
            let what = format!("chart {chart} to be installed (job helm-install-{chart})");
            reporter.event(Event::Phase { name: &format!("waiting for {what}"), total: None });
            wait(clock, deadline, opts.poll, || job_succeeded(host, k, chart))
                .map_err(|seen| timed_out(target, &what, &seen, opts.timeout))?;
            charts.push((chart.clone(), clock.now().duration_since(start).as_secs()));
        }
    }
    Ok(LiveReport { unit: target.unit.clone(), node_ready_after_s, charts })
}

/// Applies every `sysctl.d` file as at boot (`systemctl restart systemd-sysctl`, as
/// RKE2's hardening guide does after copying the CIS file), then reads each setting
/// back: a file later in `sysctl.d` order that sets another value would otherwise
/// leave RKE2 in a restart loop until the bring-up timed out.
fn apply_sysctl(host: &dyn Host, s: &SysctlApply) -> Result<()> {
    let argv = ["systemctl", "restart", "systemd-sysctl.service"];
    host.run(&argv)?.checked(&argv)?;
    let mut wrong = Vec::new();
    for (key, want) in &s.expect {
        let path = crate::render::distribution::proc_sys_path(key);
        let got = host.read_file(&path)?.map(|b| String::from_utf8_lossy(&b).trim().to_string());
        if got.as_deref() != Some(want.as_str()) {
            wrong.push(format!("{key} is {} (needs {want})", got.as_deref().unwrap_or("unreadable")));
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(Error::input(
        s.file.display().to_string(),
        format!("applied, but the kernel still has {}; the distribution would refuse to start", wrong.join(", ")),
    )
    .with_hint(format!(
        "a file later in sysctl.d order sets them otherwise: find it with `systemd-analyze cat-config sysctl.d`, \
         align it with {}, run `systemctl restart systemd-sysctl`, then the same install command again",
        s.file.display()
    )))
}

/// Polls `probe` until it says done (`Ok(None)`) or the deadline passes; returns the
/// last state seen on timeout. Probe errors (the API server still starting) are states
/// too, not failures.
fn wait(
    clock: &dyn Clock,
    deadline: Instant,
    poll: Duration,
    mut probe: impl FnMut() -> Result<Option<String>>,
) -> std::result::Result<(), String> {
    loop {
        let seen = match probe() {
            Ok(None) => return Ok(()),
            Ok(Some(state)) => state,
            Err(e) => e.to_string(),
        };
        if clock.now() >= deadline {
            return Err(seen);
        }
        clock.sleep(poll);
    }
}

fn timed_out(target: &LiveTarget, what: &str, seen: &str, timeout: Duration) -> Error {
    let logs = match target.kind {
        DistributionKind::K3s | DistributionKind::Rke2 => format!("journalctl -u {} -n 200", target.unit),
    };
    Error::new(
        ErrorKind::Io,
        format!("live install on node {}", target.node),
        format!("gave up after {} s waiting for {what}; last seen: {seen}", timeout.as_secs()),
    )
    .with_hint(format!(
        "the files are in place and the unit is enabled; look at `{logs}` and `kubectl -n {HELM_CHART_NAMESPACE} \
         get helmcharts,jobs`, fix the cause, then run the same install command again: it resumes"
    ))
}

/// `None` when Ready; otherwise what was seen.
fn node_ready(host: &dyn Host, k: &Kube, node: &str) -> Result<Option<String>> {
    let jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
    let out = k.run(host, &["get", "node", node, "-o", jsonpath])?;
    if !out.success() {
        return Ok(Some(format!("kubectl: {}", out.stderr.trim())));
    }
    match out.stdout.trim() {
        "True" => Ok(None),
        "" => Ok(Some("the node has no Ready condition yet".into())),
        s => Ok(Some(format!("Ready={s}"))),
    }
}

fn unit_active(host: &dyn Host, unit: &str) -> Result<Option<String>> {
    let out = host.run(&["systemctl", "is-active", unit])?;
    match out.stdout.trim() {
        "active" => Ok(None),
        s => Ok(Some(format!("{unit} is {s}"))),
    }
}

/// `None` once helm-controller's install job for the chart has succeeded.
fn job_succeeded(host: &dyn Host, k: &Kube, chart: &str) -> Result<Option<String>> {
    let job = format!("job/helm-install-{chart}");
    let out =
        k.run(host, &["-n", HELM_CHART_NAMESPACE, "get", &job, "-o", "jsonpath={.status.succeeded}/{.status.failed}"])?;
    if !out.success() {
        return Ok(Some(format!("kubectl: {}", out.stderr.trim())));
    }
    let (ok, failed) = out.stdout.trim().split_once('/').unwrap_or((out.stdout.trim(), ""));
    if ok.parse::<u32>().unwrap_or(0) > 0 {
        return Ok(None);
    }
    // helm-controller retries failed installs; a failure count is progress to report,
    // not the end (the deadline is).
    Ok(Some(match failed.parse::<u32>().unwrap_or(0) {
        0 => "running".to_string(),
        n => format!("{n} failed attempts so far (`kubectl -n {HELM_CHART_NAMESPACE} logs {job}`)"),
    }))
}

/// One HTTPS endpoint checked once the platform's charts are installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpsCheck {
    /// `keycloak`, `minio`, `app`.
    pub name: String,
    pub url: String,
    /// A top-level JSON string field the response must carry with this value (Keycloak's
    /// discovery document names its issuer); `None`: any 2xx answer.
    pub expect_json: Option<(String, String)>,
}

/// What a post-install check saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HttpsResult {
    pub name: String,
    pub url: String,
    /// Seconds from the start of the checks until it answered as expected.
    pub ok_after_s: u64,
}

/// Checks each endpoint over HTTPS **against the site CA only** (`curl --cacert`), with
/// the ingress host resolved to this node (`--resolve`), so neither the site's DNS nor
/// the host's CA store can make a broken setup look fine. Polls until each answers as
/// expected or the deadline passes: Keycloak and the ingress take minutes after the
/// charts' jobs finish.
pub fn post_install_checks(
    host: &dyn Host,
    checks: &[HttpsCheck],
    ca: &std::path::Path,
    node_ip: std::net::IpAddr,
    opts: WaitOptions,
    clock: &dyn Clock,
    reporter: &dyn Reporter,
) -> Result<Vec<HttpsResult>> {
    if !host.live() {
        return Err(Error::input(
            host.root().display().to_string(),
            "endpoints are checked only on the running system",
        )
        .with_hint("boot the target root; then run the install again to check"));
    }
    let start = clock.now();
    let deadline = start + opts.timeout;
    let mut out = Vec::new();
    let mut record = EndpointChecks { ran: crate::state::now_rfc3339(), ca: ca.to_path_buf(), checks: Vec::new() };
    for c in checks {
        reporter.event(Event::Phase { name: &format!("checking {} at {}", c.name, c.url), total: None });
        let waited = wait(clock, deadline, opts.poll, || https_once(host, c, ca, node_ip));
        record.checks.push(EndpointCheck {
            name: c.name.clone(),
            url: c.url.clone(),
            ok: waited.is_ok(),
            seen: waited.as_ref().err().cloned(),
        });
        if waited.is_err() {
            // The checks not reached are not in the record: no result, no evidence.
            record.save(host)?;
        }
        waited.map_err(|seen| {
            Error::new(
                ErrorKind::Io,
                format!("post-install check {} ({})", c.name, c.url),
                format!("gave up after {} s; last seen: {seen}", opts.timeout.as_secs()),
            )
            .with_hint(format!(
                "a certificate error means the ingress serves another certificate than the site CA's ({}); \
                 \"could not resolve\" or \"connection refused\" means the ingress is not up yet \
                 (`kubectl get pods -A`); fix the cause and run the same install command again",
                ca.display()
            ))
        })?;
        out.push(HttpsResult {
            name: c.name.clone(),
            url: c.url.clone(),
            ok_after_s: clock.now().duration_since(start).as_secs(),
        });
    }
    // A node that checks nothing (it does not start the cluster) keeps no record.
    if !record.checks.is_empty() {
        record.save(host)?;
    }
    Ok(out)
}

/// Where the last run of [`post_install_checks`] (an install's, or an upgrade's health
/// gate) keeps what it saw, for `airlock report`: evidence that the platform's
/// endpoints answered over TLS the site CA vouches for.
pub const ENDPOINT_CHECKS_PATH: &str = "/var/lib/airlock/endpoint-checks.json";

/// The record at [`ENDPOINT_CHECKS_PATH`]: URLs and outcomes only (no answer bodies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointChecks {
    /// When the checks started (RFC 3339, UTC).
    pub ran: String,
    /// The CA the endpoints were checked against (and nothing else).
    pub ca: std::path::PathBuf,
    /// Each check run, in order; one that failed ends the list.
    pub checks: Vec<EndpointCheck>,
}

/// One endpoint of [`EndpointChecks`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCheck {
    /// `keycloak`, `minio`, `app`.
    pub name: String,
    pub url: String,
    pub ok: bool,
    /// What it last answered, when it did not answer as expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
}

impl EndpointChecks {
    fn save(&self, host: &dyn Host) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).expect("endpoint checks serialise");
        json.push(b'\n');
        host.write_file(
            std::path::Path::new(ENDPOINT_CHECKS_PATH),
            &mut json.as_slice(),
            crate::host::Perms::mode(0o644),
        )
        .map(|_| ())
    }

    /// The last checks kept on the target, if any ran there.
    pub fn load(host: &dyn Host) -> Result<Option<Self>> {
        let Some(bytes) = host.read_file(std::path::Path::new(ENDPOINT_CHECKS_PATH))? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(ENDPOINT_CHECKS_PATH, format!("is not an endpoint check record this airlock can read: {e}"))
                .with_hint("run the install command again on the node: its checks rewrite the record")
        })
    }
}

/// `None` when the endpoint answered as expected; otherwise what it did.
fn https_once(host: &dyn Host, c: &HttpsCheck, ca: &std::path::Path, ip: std::net::IpAddr) -> Result<Option<String>> {
    let authority = c.url.trim_start_matches("https://").split('/').next().unwrap_or_default().to_string();
    let target = match ip {
        std::net::IpAddr::V6(a) => format!("[{a}]"),
        std::net::IpAddr::V4(a) => a.to_string(),
    };
    let resolve = format!("{authority}:443:{target}");
    let ca = ca.to_string_lossy();
    let argv = [
        "curl",
        "--silent",
        "--show-error",
        "--fail",
        "--max-time",
        "10",
        "--cacert",
        ca.as_ref(),
        "--resolve",
        &resolve,
        &c.url,
    ];
    let out = host.run(&argv)?;
    if !out.success() {
        return Ok(Some(format!("curl: {}", out.stderr.trim())));
    }
    let Some((field, want)) = &c.expect_json else { return Ok(None) };
    let got = serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.get(field).and_then(|f| f.as_str()).map(str::to_string));
    match got {
        Some(g) if g == *want => Ok(None),
        Some(g) => Ok(Some(format!("`{field}` is `{g}`, expected `{want}`"))),
        None => Ok(Some(format!("the answer is not a JSON document with `{field}`"))),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use airlock_format::report::Silent;

    use super::*;
    use crate::host::{CommandOutput, HostCall, RecordingHost};

    struct FakeClock {
        start: Instant,
        elapsed: Cell<Duration>,
    }
    impl FakeClock {
        fn new() -> Self {
            Self { start: Instant::now(), elapsed: Cell::new(Duration::ZERO) }
        }
    }
    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.start + self.elapsed.get()
        }
        fn sleep(&self, d: Duration) {
            self.elapsed.set(self.elapsed.get() + d);
        }
    }

    fn server() -> LiveTarget {
        LiveTarget {
            kind: DistributionKind::K3s,
            unit: "k3s.service".into(),
            node: "n1".into(),
            kubectl: Some(Kube::new("/usr/local/bin/kubectl", "/etc/rancher/k3s/k3s.yaml")),
            charts: vec!["hello".into(), "notes".into()],
            sysctl: None,
        }
    }

    fn runs(host: &RecordingHost) -> Vec<String> {
        host.calls()
            .into_iter()
            .filter_map(|c| match c {
                HostCall::Run { argv } => Some(argv.join(" ")),
                _ => None,
            })
            .collect()
    }

    const NODE: &[&str] = &[
        "/usr/local/bin/kubectl",
        "--kubeconfig",
        "/etc/rancher/k3s/k3s.yaml",
        "--request-timeout=15s",
        "get",
        "node",
    ];
    fn job(chart: &str) -> Vec<String> {
        [
            "/usr/local/bin/kubectl",
            "--kubeconfig",
            "/etc/rancher/k3s/k3s.yaml",
            "--request-timeout=15s",
            "-n",
            "kube-system",
            "get",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("job/helm-install-{chart}")])
        .collect()
    }

    #[test]
    fn bring_up_starts_the_unit_then_waits_for_the_node_and_each_chart_job() {
        let host = RecordingHost::new(true).unwrap();
        host.expect_command(&["systemctl", "enable", "--now"], CommandOutput::ok(""));
        // The API server answers "not found" twice before the node registers.
        host.expect_command(NODE, CommandOutput::ok("True"));
        host.expect_command_times(NODE, CommandOutput::ok("False"), 1);
        host.expect_command_times(NODE, CommandOutput::exit(1, "nodes \"n1\" not found"), 2);
        for c in ["hello", "notes"] {
            let argv = job(c);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            host.expect_command(&argv, CommandOutput::ok("1/"));
            host.expect_command_times(&argv, CommandOutput::ok("/2"), 2);
        }
        let clock = FakeClock::new();
        let opts = WaitOptions { timeout: Duration::from_secs(600), poll: Duration::from_secs(5) };
        let r = bring_up(&host, &server(), opts, &clock, &Silent).unwrap();
        assert_eq!(r.node_ready_after_s, 15, "three polls before Ready");
        assert_eq!(r.charts.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["hello", "notes"]);
        let runs = runs(&host);
        assert_eq!(runs[0], "systemctl enable --now k3s.service");
        assert_eq!(runs.iter().filter(|r| r.contains("get node n1")).count(), 4);
        let hello = runs.iter().position(|r| r.contains("helm-install-hello")).unwrap();
        let notes = runs.iter().position(|r| r.contains("helm-install-notes")).unwrap();
        let last_node = runs.iter().rposition(|r| r.contains("get node")).unwrap();
        assert!(last_node < hello && hello < notes, "{runs:#?}");
    }

    fn cis_server(host: &RecordingHost, values: &[(&str, &str)]) -> LiveTarget {
        for (key, value) in values {
            let path = crate::render::distribution::proc_sys_path(key);
            host.write_file(&path, &mut format!("{value}\n").as_bytes(), crate::host::Perms::mode(0o644)).unwrap();
        }
        LiveTarget {
            kind: DistributionKind::Rke2,
            unit: "rke2-server.service".into(),
            kubectl: None,
            charts: vec![],
            sysctl: Some(SysctlApply {
                file: "/etc/sysctl.d/60-rke2-cis.conf".into(),
                expect: crate::render::distribution::CIS_SYSCTLS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
            ..server()
        }
    }

    #[test]
    fn distribution_cis_sysctls_are_applied_and_read_back_before_the_unit_first_starts() {
        let host = RecordingHost::new(true).unwrap();
        host.expect_command(&["systemctl", "restart", "systemd-sysctl.service"], CommandOutput::ok(""));
        host.expect_command(&["systemctl", "enable", "--now"], CommandOutput::ok(""));
        host.expect_command(&["systemctl", "is-active"], CommandOutput::ok("active\n"));
        let t = cis_server(&host, crate::render::distribution::CIS_SYSCTLS);
        bring_up(&host, &t, WaitOptions::default(), &FakeClock::new(), &Silent).unwrap();
        let calls = host.calls();
        let at = |f: &dyn Fn(&HostCall) -> bool| calls.iter().position(f).expect("call made");
        let restart = at(&|c| matches!(c, HostCall::Run { argv } if argv.join(" ").contains("restart systemd-sysctl")));
        let read_back = at(&|c| matches!(c, HostCall::ReadFile { path } if path.ends_with("kernel/panic_on_oops")));
        let start = at(&|c| matches!(c, HostCall::Run { argv } if argv.join(" ").contains("enable --now")));
        assert!(restart < read_back && read_back < start, "{calls:#?}");
    }

    #[test]
    fn distribution_cis_sysctls_overridden_by_a_later_file_stop_before_the_unit_starts() {
        let host = RecordingHost::new(true).unwrap();
        host.expect_command(&["systemctl", "restart", "systemd-sysctl.service"], CommandOutput::ok(""));
        let t = cis_server(
            &host,
            &[
                ("vm.overcommit_memory", "0"),
                ("vm.panic_on_oom", "0"),
                ("kernel.panic", "10"),
                ("kernel.panic_on_oops", "1"),
            ],
        );
        let e = bring_up(&host, &t, WaitOptions::default(), &FakeClock::new(), &Silent).unwrap_err().to_string();
        assert!(e.contains("vm.overcommit_memory is 0 (needs 1)") && e.contains("systemd-analyze cat-config"), "{e}");
        assert!(runs(&host).iter().all(|r| !r.contains("enable --now")), "the unit was started: {:#?}", runs(&host));
    }

    #[test]
    fn distribution_without_cis_applies_no_sysctl_before_starting() {
        let host = RecordingHost::new(true).unwrap();
        host.expect_command(&["systemctl", "enable", "--now"], CommandOutput::ok(""));
        host.expect_command(&["systemctl", "is-active"], CommandOutput::ok("active\n"));
        let t = LiveTarget { kubectl: None, charts: vec![], ..server() };
        bring_up(&host, &t, WaitOptions::default(), &FakeClock::new(), &Silent).unwrap();
        assert!(runs(&host).iter().all(|r| !r.contains("sysctl")), "{:#?}", runs(&host));
    }

    #[test]
    fn a_chart_job_that_never_succeeds_times_out_naming_the_chart_and_how_to_look() {
        let host = RecordingHost::new(true).unwrap();
        host.expect_command(&["systemctl", "enable", "--now"], CommandOutput::ok(""));
        host.expect_command(NODE, CommandOutput::ok("True"));
        let argv = job("hello");
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        host.expect_command(&argv, CommandOutput::ok("/7"));
        let clock = FakeClock::new();
        let opts = WaitOptions { timeout: Duration::from_secs(60), poll: Duration::from_secs(5) };
        let e = bring_up(&host, &server(), opts, &clock, &Silent).unwrap_err().to_string();
        assert!(e.contains("chart hello") && e.contains("7 failed attempts") && e.contains("60 s"), "{e}");
        assert!(e.contains("hint:") && e.contains("journalctl -u k3s.service"), "{e}");
        assert!(clock.elapsed.get() >= Duration::from_secs(60) && clock.elapsed.get() < Duration::from_secs(70));
    }

    #[test]
    fn an_agent_waits_for_its_unit_without_api_credentials() {
        let host = RecordingHost::new(true).unwrap();
        host.expect_command(&["systemctl", "enable", "--now"], CommandOutput::ok(""));
        host.expect_command(&["systemctl", "is-active"], CommandOutput::ok("active\n"));
        host.expect_command_times(&["systemctl", "is-active"], CommandOutput::exit(3, "activating"), 1);
        let t = LiveTarget { unit: "k3s-agent.service".into(), kubectl: None, charts: vec![], ..server() };
        let r = bring_up(&host, &t, WaitOptions::default(), &FakeClock::new(), &Silent).unwrap();
        assert_eq!(r.node_ready_after_s, 5);
        assert!(runs(&host).iter().all(|r| !r.contains("kubectl")));
    }

    #[test]
    fn a_unit_that_fails_to_start_is_an_error_naming_it() {
        let host = RecordingHost::new(true).unwrap();
        host.expect_command(&["systemctl", "enable", "--now"], CommandOutput::exit(1, "Job for k3s.service failed"));
        let e = bring_up(&host, &server(), WaitOptions::default(), &FakeClock::new(), &Silent).unwrap_err();
        assert!(e.to_string().contains("k3s.service failed"), "{e}");
    }

    #[test]
    fn nothing_is_started_in_a_target_root() {
        let host = RecordingHost::new(false).unwrap();
        let e = bring_up(&host, &server(), WaitOptions::default(), &FakeClock::new(), &Silent).unwrap_err();
        assert!(e.to_string().contains("target root"), "{e}");
        assert!(runs(&host).is_empty());
    }

    fn checks() -> Vec<HttpsCheck> {
        vec![
            HttpsCheck {
                name: "keycloak".into(),
                url: "https://keycloak.example.test/realms/airlock/.well-known/openid-configuration".into(),
                expect_json: Some(("issuer".into(), "https://keycloak.example.test/realms/airlock".into())),
            },
            HttpsCheck { name: "app".into(), url: "https://app.example.test/".into(), expect_json: None },
        ]
    }

    #[test]
    fn endpoints_are_checked_against_the_site_ca_on_this_node_until_they_answer() {
        let host = RecordingHost::new(true).unwrap();
        let kc = [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "10",
            "--cacert",
            "/etc/airlock/pki/ca.crt",
            "--resolve",
            "keycloak.example.test:443:192.0.2.10",
        ];
        // The most recent matching answer wins: the general one first.
        host.expect_command(&["curl"], CommandOutput::ok("<html>"));
        host.expect_command(&kc, CommandOutput::ok(r#"{"issuer":"https://keycloak.example.test/realms/airlock"}"#));
        host.expect_command_times(&kc, CommandOutput::exit(7, "curl: (7) Failed to connect"), 2);
        let clock = FakeClock::new();
        let opts = WaitOptions { timeout: Duration::from_secs(300), poll: Duration::from_secs(5) };
        let ca = std::path::Path::new("/etc/airlock/pki/ca.crt");
        let r =
            post_install_checks(&host, &checks(), ca, "192.0.2.10".parse().unwrap(), opts, &clock, &Silent).unwrap();
        assert_eq!(
            r.iter().map(|c| (c.name.as_str(), c.ok_after_s)).collect::<Vec<_>>(),
            [("keycloak", 10), ("app", 10)]
        );
        let runs = runs(&host);
        assert!(runs.iter().all(|r| r.contains("--cacert /etc/airlock/pki/ca.crt")), "{runs:#?}");
        assert!(runs.last().unwrap().contains("--resolve app.example.test:443:192.0.2.10 https://app.example.test/"));
    }

    #[test]
    fn an_untrusted_certificate_or_a_wrong_issuer_fails_the_check_naming_it() {
        let host = RecordingHost::new(true).unwrap();
        host.expect_command(
            &["curl"],
            CommandOutput::exit(60, "curl: (60) SSL certificate problem: unable to get local issuer certificate"),
        );
        let opts = WaitOptions { timeout: Duration::from_secs(30), poll: Duration::from_secs(5) };
        let ca = std::path::Path::new("/etc/airlock/pki/ca.crt");
        let ip = "192.0.2.10".parse().unwrap();
        let e =
            post_install_checks(&host, &checks(), ca, ip, opts, &FakeClock::new(), &Silent).unwrap_err().to_string();
        assert!(
            e.contains("post-install check keycloak") && e.contains("SSL certificate problem") && e.contains("hint:"),
            "{e}"
        );
        // The failure is kept for `airlock report` too: the check that failed ends it.
        let kept = EndpointChecks::load(&host).unwrap().unwrap();
        assert_eq!(kept.checks.len(), 1, "{kept:?}");
        assert!(!kept.checks[0].ok && kept.checks[0].seen.as_deref().unwrap().contains("SSL certificate problem"));

        let host = RecordingHost::new(true).unwrap();
        host.expect_command(
            &["curl"],
            CommandOutput::ok(r#"{"issuer":"http://keycloak.example.test/realms/airlock"}"#),
        );
        let e =
            post_install_checks(&host, &checks(), ca, ip, opts, &FakeClock::new(), &Silent).unwrap_err().to_string();
        assert!(e.contains("`issuer` is `http://keycloak.example.test/realms/airlock`"), "{e}");
    }
}
