//! The interactive wizard, driven through a real pseudo-terminal (tmux): the field
//! engineer's path when no answers file is given. Bad values are refused at the
//! prompt with the same validators the answers file uses, and asked again.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_installer::host::RootedHost;
use airlock_installer::site::answers::kept::load_kept;
use airlock_tests::slapd::{self, Directory, Slapd};
use airlock_tests::{build_demo_bundle, build_demo_bundle_without, cargo_bin, require_tool, workspace_root};

struct Tmux {
    bin: std::path::PathBuf,
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let o = Command::new(&self.bin).arg("-L").arg(&self.socket).args(args).stdin(Stdio::null()).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-S", "-200", "-t", "wz"])
    }
    /// Waits until `text` is on the screen (the prompt is drawn) or fails the test.
    fn wait_for(&self, text: &str) {
        let start = Instant::now();
        while !self.screen().contains(text) {
            assert!(start.elapsed() < Duration::from_secs(20), "`{text}` never appeared:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    /// Waits until `text` is on the screen `n` times (a prompt asked again).
    fn wait_for_nth(&self, text: &str, n: usize) {
        let start = Instant::now();
        while self.screen().matches(text).count() < n {
            assert!(start.elapsed() < Duration::from_secs(20), "`{text}` never appeared {n} times:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "wz"];
        args.extend_from_slice(keys);
        self.run(&args);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

#[test]
fn wizard_on_a_terminal_refuses_bad_values_and_plans_the_install() {
    let Some(bin) = require_tool("tmux") else { return };
    let d = tempfile::tempdir().unwrap();
    // Without Keycloak, which needs the `ldap` section this test leaves empty.
    let b = build_demo_bundle_without(d.path(), &["keycloakx"]);
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let tmux = Tmux { bin, socket: format!("airlock-wizard-{}", std::process::id()) };
    let saved = d.path().join("saved.yaml");
    let cmd = format!(
        "{} install {} --pubkey {} --root {} --dry-run --save-answers {}; echo EXIT=$?; sleep 60",
        cargo_bin("airlock").display(),
        b.display(),
        workspace_root().join("examples/demo/keys/demo.pub").display(),
        root.display(),
        saved.display()
    );
    tmux.run(&["new-session", "-d", "-s", "wz", "-x", "200", "-y", "60", &cmd]);
    tmux.wait_for("Install profile");
    tmux.send(&["Enter"]);
    tmux.wait_for("Name of this node");
    tmux.send(&["Bad-Name", "Enter"]);
    tmux.wait_for("not taken: node.name");
    tmux.send(&["demo-node", "Enter"]);
    tmux.wait_for("IP address of this node");
    tmux.send(&["300.1.1.1", "Enter"]);
    tmux.wait_for("not taken: node.ip");
    tmux.send(&["192.0.2.10", "Enter"]);
    tmux.wait_for("Base domain");
    tmux.send(&["platform.example.test", "Enter"]);
    for prompt in [
        "Extra names",
        "Pod network",
        "Service network",
        "Cluster DNS",
        "Registry mirror",
        "Data directory",
        // Enter keeps the self-signed site CA.
        "TLS certificates",
        "LDAP/AD server URL",
        // The profile installs monitoring: its receivers (no directory, so no groups).
        "Webhook Alertmanager posts alerts to",
        "SMTP relay Alertmanager mails alerts through",
    ] {
        tmux.wait_for(prompt);
        tmux.send(&["Enter"]);
    }
    tmux.wait_for("EXIT=");
    let screen = tmux.screen();
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("enable unit k3s.service") && screen.contains("0 blocked"), "{screen}");
    // What was answered is shown as a whole before the plan.
    let summary = screen.find("your answers (secrets masked):").unwrap_or_else(|| panic!("no summary:\n{screen}"));
    assert!(screen[summary..].contains("name: demo-node") && screen[summary..].contains("ip: 192.0.2.10"), "{screen}");
    // The URL prompt offered an empty answer, and Enter took it: no directory.
    assert!(
        screen.contains("LDAP/AD server URL (empty: no directory)") && !screen[summary..].contains("ldap:"),
        "{screen}"
    );
    // A dry run changed nothing on the target.
    assert!(!root.join("etc").exists());
    // --save-answers wrote what was answered: the next run takes it unasked.
    let text = std::fs::read_to_string(&saved).unwrap_or_else(|e| panic!("{e}\n{screen}"));
    assert!(text.contains("name: demo-node") && text.contains("--save-answers"), "{text}");
    let again = Command::new(cargo_bin("airlock"))
        .args(["install", &b.display().to_string(), "--dry-run", "--answers", &saved.display().to_string()])
        .arg("--pubkey")
        .arg(workspace_root().join("examples/demo/keys/demo.pub"))
        .arg("--root")
        .arg(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
}

#[test]
fn wizard_tests_the_ldap_answers_live_asks_them_again_after_a_refused_bind_and_the_site_keeps_them() {
    let Some(bin) = require_tool("tmux") else { return };
    let Some(dir) = Slapd::start(Directory::OpenLdap) else { return };
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let tmux = Tmux { bin, socket: format!("airlock-wizard-ldap-{}", std::process::id()) };
    let cmd = format!(
        "{} install {} --pubkey {} --root {} --yes; echo EXIT=$?; sleep 60",
        cargo_bin("airlock").display(),
        b.display(),
        workspace_root().join("examples/demo/keys/demo.pub").display(),
        root.display()
    );
    tmux.run(&["new-session", "-d", "-s", "wz", "-x", "200", "-y", "60", &cmd]);
    let answer = |prompt: &str, n: usize, keys: &[&str]| {
        tmux.wait_for_nth(prompt, n);
        tmux.send(keys);
    };
    answer("Install profile", 1, &["Enter"]);
    answer("Name of this node", 1, &["demo-node", "Enter"]);
    answer("IP address of this node", 1, &["192.0.2.10", "Enter"]);
    answer("Base domain", 1, &["platform.example.test", "Enter"]);
    for prompt in [
        "Extra names",
        "Pod network",
        "Service network",
        "Cluster DNS",
        "Registry mirror",
        "Data directory",
        "TLS certificates",
    ] {
        answer(prompt, 1, &["Enter"]);
    }
    let ca = dir.ca_pem().display().to_string();
    answer("LDAP/AD server URL", 1, &[&dir.ldaps_url(), "Enter"]);
    answer("CA certificate of the directory", 1, &[&ca, "Enter"]);
    answer("Bind DN (", 1, &[slapd::OPENLDAP_BIND_DN, "Enter"]);
    answer("Bind password", 1, &["not-the-password", "Enter"]);
    answer("Users DN (", 1, &[slapd::OPENLDAP_USERS_DN, "Enter"]);
    answer("Directory type", 1, &["Enter"]);
    answer("Extra user filter", 1, &["Enter"]);
    answer("Groups DN (", 1, &[slapd::OPENLDAP_GROUPS_DN, "Enter"]);
    tmux.wait_for("not taken: ldap.bind_dn: the live check failed (bind-refused)");
    // Asking again is the default; skipping is for a directory out of reach.
    answer("The ldap live check failed", 1, &["Enter"]);
    // Asked again: Enter keeps each earlier answer; the password is typed anew.
    answer("LDAP/AD server URL", 2, &["Enter"]);
    answer("CA certificate of the directory", 2, &["Enter"]);
    answer("Bind DN (", 2, &["Enter"]);
    answer("Bind password", 2, &[slapd::OPENLDAP_BIND_PW, "Enter"]);
    answer("Users DN (", 2, &["Enter"]);
    answer("Directory type", 2, &["Enter"]);
    answer("Extra user filter", 2, &["Enter"]);
    answer("Groups DN (", 2, &["Enter"]);
    // With a directory, Grafana's roles come from its groups.
    answer("Directory group whose members are Grafana admins", 1, &["ops-admins", "Enter"]);
    answer("Directory group whose members are Grafana editors", 1, &["Enter"]);
    answer("Webhook Alertmanager posts alerts to", 1, &["Enter"]);
    answer("SMTP relay Alertmanager mails alerts through", 1, &["Enter"]);
    tmux.wait_for("EXIT=");
    let screen = tmux.screen();
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        screen.contains("3 users under ou=people,dc=example,dc=org") && screen.contains("2 groups under"),
        "{screen}"
    );
    assert!(!screen.contains("not-the-password") && !screen.contains(slapd::OPENLDAP_BIND_PW), "{screen}");
    // The summary of the answers masks the password.
    assert!(
        screen.contains("your answers (secrets masked):") && screen.contains("bind_password: <redacted>"),
        "{screen}"
    );

    // The site keeps what the wizard was told, so an upgrade months later needs no
    // answers file: the bind password apart, 0600, and put back when read.
    let kept = std::fs::read_to_string(root.join("var/lib/airlock/answers.yaml")).expect("the answers are kept");
    assert!(kept.contains("demo-node") && kept.contains("<redacted>"), "{kept}");
    assert!(!kept.contains(slapd::OPENLDAP_BIND_PW), "{kept}");
    let secret = root.join("var/lib/airlock/secrets/answers-ldap.bind_password");
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    let host = RootedHost::new(root.clone(), false).unwrap();
    let back = load_kept(&host).unwrap().expect("kept answers load");
    let ldap = back.ldap.as_ref().expect("the ldap section is kept");
    assert_eq!(ldap.bind_password.expose(), slapd::OPENLDAP_BIND_PW);
    // The monitoring answer typed in, the default where Enter was pressed.
    assert_eq!(back.monitoring.grafana_admin_group, "ops-admins");
    assert_eq!(back.monitoring.grafana_editor_group, "grafana-editors");
}
