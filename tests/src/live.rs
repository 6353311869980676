//! Helpers for driving live mode through the recording host: a clock that only moves
//! when the code under test sleeps, and the kubectl command lines K3s answers.

use std::cell::Cell;
use std::time::{Duration, Instant};

use airlock_installer::host::{CommandOutput, RecordingHost};
use airlock_installer::live::Clock;

/// Time that passes only when the code under test sleeps, so deadlines are reached
/// at once and deterministically.
pub struct TestClock(pub Cell<Instant>);

impl TestClock {
    pub fn new() -> Self {
        TestClock(Cell::new(Instant::now()))
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        self.0.get()
    }
    fn sleep(&self, d: Duration) {
        self.0.set(self.0.get() + d)
    }
}

/// `kubectl ARGS` as the installer runs it on a K3s server (its binary, the admin
/// kubeconfig and the request timeout every request carries), for scripting the
/// recording host's answers.
pub fn kubectl(args: &[&str]) -> Vec<String> {
    kubectl_with_timeout("15s", args)
}

/// As [`kubectl`], for a stream as long as its data (`exec` of a database dump): no
/// request timeout (`0s`).
pub fn kubectl_streaming(args: &[&str]) -> Vec<String> {
    kubectl_with_timeout("0s", args)
}

fn kubectl_with_timeout(timeout: &str, args: &[&str]) -> Vec<String> {
    let timeout = format!("--request-timeout={timeout}");
    ["/usr/local/bin/kubectl", "--kubeconfig", "/etc/rancher/k3s/k3s.yaml", &timeout]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

/// The demo's public Keycloak issuer (its answers' base domain).
pub const DEMO_ISSUER: &str = "https://keycloak.platform.example.test/realms/airlock";

/// Scripts the recording host so every post-install HTTPS check of the demo answers:
/// any `curl` gets a page, and Keycloak's discovery document (checked against the site
/// CA, resolved to the demo node) names the demo issuer.
pub fn expect_healthy_demo_endpoints(host: &RecordingHost) {
    host.expect_command(&["curl"], CommandOutput::ok("ok"));
    host.expect_command(
        &[
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "10",
            "--cacert",
            "/etc/airlock/pki/ca.crt",
            "--resolve",
            "keycloak.platform.example.test:443:192.0.2.10",
        ],
        CommandOutput::ok(format!(r#"{{"issuer":"{DEMO_ISSUER}"}}"#)),
    );
}
