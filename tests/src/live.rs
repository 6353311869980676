//! Helpers for driving live mode through the recording host: a clock that only moves
//! when the code under test sleeps, and the kubectl command lines K3s answers.

use std::cell::Cell;
use std::time::{Duration, Instant};

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

/// `kubectl ARGS` as the installer runs it on a K3s server (its binary and the admin
/// kubeconfig), for scripting the recording host's answers.
pub fn kubectl(args: &[&str]) -> Vec<String> {
    ["/usr/local/bin/kubectl", "--kubeconfig", "/etc/rancher/k3s/k3s.yaml"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}
