//! `airlock install` with `nodes:` against real OpenSSH servers: each other node is a
//! Debian `sshd` in a network namespace of its own, on its own address behind a veth
//! pair and a bridge (the first server is this test's own namespace, the bridge's
//! address). Each node's sshd sets `AIRLOCK_TARGET_ROOT` for its sessions (`SetEnv`),
//! so the node installs into its own target root with the installer binary the run
//! took from the bundle; nothing of K3s runs (the target-root install lays files out).
//!
//! The lab starts once per test binary; the scenarios take turns on it (a lock) and
//! start from empty node roots. A reaper process removes the namespaces, the bridge
//! and the sshd processes when the test binary exits, however it exits.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use airlock_tests::tree::walk;
use airlock_tests::{build_demo_variant, cargo_bin, demo_dir, require_tool, skip_or_fail};

const NET: &str = "10.231.77";
/// A node's incoming directory, below its root.
const INCOMING: &str = "var/lib/airlock/incoming";

/// The nodes set up over SSH: name, last octet, role.
const NODES: [(&str, u8, &str); 3] = [("s2", 12, "server"), ("s3", 13, "server"), ("w1", 21, "agent")];

struct Lab {
    dir: PathBuf,
    bundle: PathBuf,
    /// The same demo as 1.1.0 without the notes chart: built when a test upgrades.
    bundle_v2: OnceLock<PathBuf>,
    /// Namespace and veth names by node.
    ns: Vec<(String, String)>,
    host_keys: Vec<String>,
    /// The sshd processes and the reaper; they outlive the tests, and the reaper ends
    /// the sshd processes when this binary exits.
    _children: Mutex<Vec<std::process::Child>>,
}

static LAB: OnceLock<Option<Lab>> = OnceLock::new();
static TURN: Mutex<()> = Mutex::new(());

fn run(cmd: &mut Command) -> Output {
    let o = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn sh(script: &str) -> Output {
    run(Command::new("sh").args(["-ec", script]))
}

/// The lab, or `None` (skipped visibly) where it cannot run; fails under
/// AIRLOCK_REQUIRE_TOOLS=1 instead.
fn lab() -> Option<(&'static Lab, MutexGuard<'static, ()>)> {
    let lab = LAB.get_or_init(start_lab).as_ref()?;
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    for (name, _, _) in NODES {
        let root = lab.dir.join(name).join("root");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
    }
    std::fs::write(lab.dir.join("ssh-argv.log"), "").unwrap();
    Some((lab, turn))
}

fn start_lab() -> Option<Lab> {
    require_tool("ssh")?;
    require_tool("ssh-keygen")?;
    let sshd = ["/usr/sbin/sshd", "/sbin/sshd"].into_iter().map(PathBuf::from).find(|p| p.is_file());
    if sshd.is_none() {
        return skip_or_fail("sshd (Debian openssh-server) is not installed");
    }
    let sshd = sshd.unwrap();
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    if !is_root {
        return skip_or_fail("network namespaces need root");
    }
    let tag = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("airlock-cluster-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let bridge = format!("alb{tag}");
    let mut ns = Vec::new();
    // The reaper first: whatever happens below, it cleans up after this process.
    let mut cleanup = format!("ip link del {bridge} 2>/dev/null; rm -rf {}", dir.display());
    for (name, _, _) in NODES {
        let n = format!("al{tag}{name}");
        cleanup = format!("ip netns pids {n} 2>/dev/null | xargs -r kill; ip netns del {n} 2>/dev/null; {cleanup}");
        ns.push((n, format!("av{tag}{name}")));
    }
    let mut children = Vec::new();
    let reaper = Command::new("sh")
        .args(["-c", &format!("while kill -0 {} 2>/dev/null; do sleep 1; done; {cleanup}", std::process::id())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    children.push(reaper);
    if Command::new("ip").args(["netns", "add", &ns[0].0]).status().map(|s| !s.success()).unwrap_or(true) {
        return skip_or_fail("`ip netns add` failed: network namespaces are not available here");
    }
    sh(&format!(
        "ip link add {bridge} type bridge; ip addr add {NET}.1/24 dev {bridge}; ip link set {bridge} up; \
         mkdir -p /run/sshd; chmod 0755 /run/sshd; \
         ssh-keygen -q -t ed25519 -N '' -f {d}/id_ed25519; \
         cp {d}/id_ed25519.pub {d}/authorized_keys; \
         printf '#!/bin/sh\\nprintf \"%%s\\\\n\" \"$*\" >> {d}/ssh-argv.log\\nexec /usr/bin/ssh \"$@\"\\n' > {d}/bin/ssh; \
         chmod 755 {d}/bin/ssh",
        d = dir.display()
    ));
    let mut host_keys = Vec::new();
    for (i, (name, octet, _)) in NODES.iter().enumerate() {
        let (n, veth) = &ns[i];
        let nd = dir.join(name);
        std::fs::create_dir_all(nd.join("root")).unwrap();
        if i > 0 {
            run(Command::new("ip").args(["netns", "add", n]));
        }
        sh(&format!(
            "ip link add {veth} type veth peer name eth0 netns {n}; ip link set {veth} master {bridge} up; \
             ip -n {n} addr add {NET}.{octet}/24 dev eth0; ip -n {n} link set eth0 up; ip -n {n} link set lo up; \
             ip -n {n} route add default via {NET}.1; \
             ssh-keygen -q -t ed25519 -N '' -f {nd}/host_key",
            nd = nd.display()
        ));
        std::fs::write(
            nd.join("sshd_config"),
            format!(
                "ListenAddress {NET}.{octet}\nHostKey {nd}/host_key\nPidFile {nd}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 SetEnv AIRLOCK_TARGET_ROOT={nd}/root\n",
                nd = nd.display(),
                d = dir.display()
            ),
        )
        .unwrap();
        let daemon = Command::new("ip")
            .args(["netns", "exec", n])
            .arg(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(nd.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(nd.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        children.push(daemon);
        let key = std::fs::read_to_string(nd.join("host_key.pub")).unwrap();
        host_keys.push(key.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    }
    for (_, octet, _) in NODES {
        let addr = format!("{NET}.{octet}:22");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(300)).is_err() {
            assert!(Instant::now() < deadline, "sshd at {addr} did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The demo bundle without Keycloak (HA with it needs an external database), with
    // this build's installer inside: the binary every other node runs.
    let spec = std::fs::read_to_string(demo_dir().join("bundle.yaml")).unwrap();
    let spec: String = spec.lines().filter(|l| !l.contains("charts/keycloakx")).map(|l| format!("{l}\n")).collect();
    let bdir = dir.join("bundle");
    std::fs::create_dir_all(&bdir).unwrap();
    let airlock = cargo_bin("airlock");
    let bundle = build_demo_variant(&spec, &bdir, &["--installer", airlock.to_str().unwrap()]);
    Some(Lab { dir, bundle, bundle_v2: OnceLock::new(), ns, host_keys, _children: Mutex::new(children) })
}

impl Lab {
    fn node_root(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("root")
    }

    /// An ssh config trusting `known` host keys (one line per node, in NODES order)
    /// and logging in with `identity`.
    fn ssh_config(&self, scenario: &str, known: &[String], identity: &str) -> PathBuf {
        let kh = self.dir.join(format!("{scenario}.known_hosts"));
        let lines: String =
            NODES.iter().zip(known).map(|((_, octet, _), key)| format!("{NET}.{octet} {key}\n")).collect();
        std::fs::write(&kh, lines).unwrap();
        let cfg = self.dir.join(format!("{scenario}.ssh_config"));
        std::fs::write(
            &cfg,
            format!(
                "Host *\n  User root\n  IdentityFile {}/{identity}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  \
                 GlobalKnownHostsFile /dev/null\n",
                self.dir.display(),
                kh.display()
            ),
        )
        .unwrap();
        cfg
    }

    fn answers(&self, scenario: &str, extra_rows: &str) -> PathBuf {
        let mut rows = format!("  - {{name: s1, address: {NET}.1, role: server}}\n");
        for (name, octet, role) in NODES {
            rows.push_str(&format!("  - {{name: {name}, address: {NET}.{octet}, role: {role}}}\n"));
        }
        let text = format!(
            "profile: ha\nnode: {{name: s1, ip: {NET}.1}}\ncluster:\n  ingress_domain: platform.example.test\n\
             nodes:\n{rows}{extra_rows}"
        );
        let p = self.dir.join(format!("{scenario}.answers.yaml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `airlock install` of the cluster from s1 (its root `s1`), with the ssh shim first
    /// on PATH so every ssh command line is logged.
    fn install(&self, s1: &Path, answers: &Path, ssh_config: &Path, env: &[(&str, &str)]) -> Output {
        self.install_cmd(s1, answers, ssh_config, env).output().unwrap()
    }

    fn install_cmd(&self, s1: &Path, answers: &Path, ssh_config: &Path, env: &[(&str, &str)]) -> Command {
        std::fs::create_dir_all(s1).unwrap();
        let path = format!("{}:{}", self.dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = Command::new(cargo_bin("airlock"));
        cmd.arg("install")
            .arg(&self.bundle)
            .arg("--pubkey")
            .arg(demo_dir().join("keys/demo.pub"))
            .arg("--answers")
            .arg(answers)
            .arg("--root")
            .arg(s1)
            .arg("--ssh-config")
            .arg(ssh_config)
            .arg("--yes")
            .env("PATH", path)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn v2(&self) -> &Path {
        self.bundle_v2.get_or_init(|| {
            let spec = std::fs::read_to_string(demo_dir().join("bundle.yaml")).unwrap();
            let spec: String = spec
                .lines()
                .filter(|l| !l.contains("charts/keycloakx") && !l.contains("charts/notes-0.1.0.tgz"))
                .map(|l| format!("{l}\n"))
                .collect();
            let spec = spec.replace("version: 1.0.0\n", "version: 1.1.0\n");
            let bdir = self.dir.join("bundle-v2");
            std::fs::create_dir_all(&bdir).unwrap();
            let airlock = cargo_bin("airlock");
            build_demo_variant(&spec, &bdir, &["--installer", airlock.to_str().unwrap()])
        })
    }

    /// `airlock upgrade` of the cluster from s1 with the site's kept answers.
    fn upgrade(&self, s1: &Path, bundle: &Path, ssh_config: &Path, env: &[(&str, &str)]) -> Output {
        let path = format!("{}:{}", self.dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = Command::new(cargo_bin("airlock"));
        cmd.arg("upgrade")
            .arg(bundle)
            .arg("--pubkey")
            .arg(demo_dir().join("keys/demo.pub"))
            .arg("--root")
            .arg(s1)
            .arg("--ssh-config")
            .arg(ssh_config)
            .arg("--yes")
            .env("PATH", path)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn argv_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ssh-argv.log")).unwrap_or_default()
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn config(root: &Path) -> serde_yaml::Mapping {
    let p = root.join("etc/rancher/k3s/config.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn get<'a>(m: &'a serde_yaml::Mapping, k: &str) -> Option<&'a serde_yaml::Value> {
    m.get(serde_yaml::Value::String(k.into()))
}

/// Every file below `dir`, as text where it is text, for the token search.
fn all_text_below(dir: &Path) -> Vec<(PathBuf, String)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            std::fs::read(e.path()).ok().map(|b| (e.path().to_path_buf(), String::from_utf8_lossy(&b).into_owned()))
        })
        .collect()
}

/// The relative paths below a root, without what is particular to one run.
fn layout(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().strip_prefix(root).unwrap().display().to_string())
        .filter(|p| !p.starts_with("var/lib/airlock/incoming") && !p.starts_with("root"))
        .filter(|p| !p.contains("/staging") && !p.starts_with("var/lib/airlock/journal"))
        .collect();
    out.sort();
    out
}

/// The last line of the output that reports on `name` (the final cluster report).
fn node_line(out: &str, name: &str) -> String {
    out.lines().rev().find(|l| l.trim_start().starts_with(&format!("{name} "))).unwrap_or("").to_string()
}

/// Every file, directory and link below a root with its digest, incoming files
/// included, without the site's lock file (a refused run writes who it is there before
/// it is refused): what "a refused run changed nothing" is measured on.
fn tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    walk(
        root,
        |rel| rel != "/var/lib/airlock/lock",
        |_, path, mode| {
            let bytes = std::fs::read(path).unwrap();
            format!("file {mode:04o} {}", hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)))
        },
    )
}

/// One cluster install, crashed right after node 2 joined and run again, ends as three
/// servers and an agent each joined by hand would: the same trees and configs. While
/// the re-run is paused before its join phase, a second run from the same first server
/// and one from another first server onto the same nodes are both refused, naming the
/// run that holds them, and change nothing on any node.
#[test]
fn cluster_install_resumes_after_a_crash_and_sets_up_the_nodes_as_node_by_node_joins_would() {
    let Some((lab, _turn)) = lab() else { return };
    let work = tempfile::tempdir().unwrap();
    let s1 = work.path().join("s1");
    let cfg = lab.ssh_config("ok", &lab.host_keys, "id_ed25519");
    let answers = lab.answers("ok", "");
    let o = lab.install(&s1, &answers, &cfg, &[("AIRLOCK_TEST_CLUSTER_CRASH_AFTER", "s2")]);
    assert!(!o.status.success(), "the injected crash did not happen: {}", text(&o));
    let crashed = text(&o);
    assert!(lab.node_root("s2").join("etc/rancher/k3s/config.yaml").is_file());
    assert!(!lab.node_root("s3").join("etc/rancher/k3s/config.yaml").exists(), "s3 joined before the crash");
    // After a failure the incoming files stay for the re-run.
    assert!(lab.node_root("s3").join(INCOMING).join("demo.airlock").is_file());
    // The installer goes gzip-compressed beside the bundle: a node gets little more
    // than the bundle's own bytes.
    let bundle_bytes: u64 =
        std::fs::read_dir(lab.bundle.parent().unwrap()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    let installer_bytes = std::fs::metadata(cargo_bin("airlock")).unwrap().len();
    let line = node_line(&crashed, "s3");
    let sent: u64 = line.rsplit(", ").next().and_then(|t| t.strip_suffix(" bytes sent")).unwrap().parse().unwrap();
    assert!(
        sent > bundle_bytes && sent < bundle_bytes + installer_bytes / 2,
        "{sent} bytes sent for {bundle_bytes}: {line}"
    );

    // The re-run (it takes over the marks the crashed run left on the nodes) pauses
    // before its join phase, holding the cluster.
    let pause = work.path().join("pause");
    std::fs::create_dir_all(&pause).unwrap();
    let pause_env = pause.display().to_string();
    let mut a = lab
        .install_cmd(&s1, &answers, &cfg, &[("AIRLOCK_TEST_CLUSTER_PAUSE_BEFORE_JOIN", &pause_env)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pause.join("paused").exists() {
        if let Some(status) = a.try_wait().unwrap() {
            panic!("the re-run ended ({status}) before its join phase: {}", text(&a.wait_with_output().unwrap()));
        }
        assert!(Instant::now() < deadline, "the re-run did not reach its join phase");
        std::thread::sleep(Duration::from_millis(100));
    }
    let holder = format!("pid {}", a.id());
    let st = Command::new(cargo_bin("airlock")).args(["status", "--root"]).arg(&s1).output().unwrap();
    assert!(text(&st).contains(&holder) && text(&st).contains("is working on this site"), "{}", text(&st));
    let roots: Vec<(&str, PathBuf)> =
        std::iter::once(("s1", s1.clone())).chain(NODES.iter().map(|(n, _, _)| (*n, lab.node_root(n)))).collect();
    let before: Vec<_> = roots.iter().map(|(_, r)| tree(r)).collect();
    // From another terminal on the same first server: refused at once, naming the run.
    let started = Instant::now();
    let b = lab.install(&s1, &answers, &cfg, &[]);
    let refused_in = started.elapsed();
    let out = text(&b);
    assert!(!b.status.success(), "{out}");
    assert!(out.contains(&holder) && out.contains("working on this cluster's nodes") && out.contains("hint:"), "{out}");
    // From another first server (another root) onto the same nodes: each node refuses.
    let b = lab.install(&work.path().join("other-s1"), &answers, &cfg, &[]);
    let out = text(&b);
    assert_eq!(b.status.code(), Some(8), "{out}");
    for (name, _, _) in NODES {
        let row = &out[out.find(&format!("  {name} ")).unwrap()..];
        assert!(node_line(&out, name).contains("FAILED at claim"), "{name}: {out}");
        assert!(row.lines().take(3).any(|l| l.contains(&holder)), "{name}: {out}");
    }
    assert!(out.contains("nothing was installed on any node"), "{out}");
    for ((name, root), was) in roots.iter().zip(&before) {
        let d = changes(was, &tree(root));
        assert!(d.is_empty(), "a refused run changed {name}:\n{}", d.join("\n"));
    }
    // The held run then finishes as it would have.
    std::fs::write(pause.join("go"), "").unwrap();
    let o = a.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    eprintln!("a second run from the same first server was refused in {refused_in:?}");
    assert!(node_line(&out, "s2").contains("not redone"), "{out}");
    assert!(node_line(&out, "s3").contains("joined") && node_line(&out, "w1").contains("joined"), "{out}");
    // Nothing was sent twice: every node had the bundle already.
    assert!(!out.contains("bytes sent"), "{out}");
    // Everything joined: the incoming files are gone from every node.
    for (name, _, _) in NODES {
        assert!(!lab.node_root(name).join(INCOMING).exists(), "{name} keeps its incoming files");
    }
    let out = format!("{crashed}{out}");

    let token_bytes = std::fs::read(s1.join("var/lib/airlock/secrets/cluster-token")).unwrap();
    let token = std::str::from_utf8(&token_bytes).unwrap().trim();
    assert!(token.len() > 16);
    assert_eq!(get(&config(&s1), "cluster-init"), Some(&serde_yaml::Value::Bool(true)));
    for (name, _, role) in NODES {
        let root = lab.node_root(name);
        let c = config(&root);
        assert_eq!(get(&c, "server").and_then(|v| v.as_str()), Some(&*format!("https://{NET}.1:6443")), "{name}");
        assert_eq!(get(&c, "token").and_then(|v| v.as_str()), Some(token), "{name}");
        assert!(get(&c, "cluster-init").is_none(), "{name}: only the first server starts the cluster");
        let tf = root.join("var/lib/airlock/secrets/cluster-token");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&tf).unwrap().permissions().mode() & 0o777, 0o600, "{name}");
        let unit = if role == "agent" { "k3s-agent.service" } else { "k3s.service" };
        assert!(root.join("etc/systemd/system/multi-user.target.wants").join(unit).symlink_metadata().is_ok());
    }

    // The token is nowhere but where K3s reads it: not in the output, not on any ssh
    // command line, not in the first server's journal, reports or node journals.
    assert!(!out.contains(token), "the token was printed");
    assert!(lab.argv_log().lines().count() > 10, "the ssh shim logged nothing: {}", lab.argv_log());
    assert!(!lab.argv_log().contains(token), "the token was on an ssh command line");
    for (p, t) in all_text_below(&s1.join("var/lib/airlock")) {
        // K3s reads it from its config (and a release snapshot keeps that for a rollback).
        let allowed = p.ends_with("secrets/cluster-token") || p.ends_with("config.yaml");
        assert!(allowed || !t.contains(token), "the token is in {}", p.display());
    }
    let journals: Vec<String> = NODES
        .iter()
        .map(|(n, _, _)| std::fs::read_to_string(s1.join(format!("var/lib/airlock/cluster/{n}.json"))).unwrap())
        .collect();
    assert!(journals.iter().all(|j| j.contains("\"phase\": \"joined\"")), "{journals:?}");

    // `airlock status` on the first server lists every other node from its journal.
    let st = Command::new(cargo_bin("airlock")).args(["status", "--root"]).arg(&s1).output().unwrap();
    let st = text(&st);
    for (name, _, role) in NODES {
        assert!(st.contains(&format!("node        {name} ({role}, ")) && st.contains("1.0.0: joined"), "{st}");
    }

    // The same node answers, joined by hand (`airlock join` on the node), give the same tree.
    for (name, octet, role) in NODES {
        let by_hand = work.path().join(format!("{name}-by-hand"));
        std::fs::create_dir_all(by_hand.join("var/lib/airlock/secrets")).unwrap();
        // Copied as the preflight's hint says: the same bytes, mode 0600.
        let copy = by_hand.join("var/lib/airlock/secrets/cluster-token");
        std::fs::write(&copy, &token_bytes).unwrap();
        std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let answers = work.path().join(format!("{name}.yaml"));
        let agents = format!("  agents:\n    - {{name: w1, ip: {NET}.21}}\n");
        std::fs::write(
            &answers,
            format!(
                "profile: ha\ncluster:\n  ingress_domain: platform.example.test\nnode: {{name: {name}, ip: {NET}.{octet}, role: {role}}}\n\
                 ha:\n  servers:\n    - {{name: s1, ip: {NET}.1}}\n    - {{name: s2, ip: {NET}.12}}\n    - {{name: s3, ip: {NET}.13}}\n{agents}\
                 join: {{server: {NET}.1, token_file: /var/lib/airlock/secrets/cluster-token}}\n"
            ),
        )
        .unwrap();
        let o = airlock_tests::airlock_with_answers("join", &lab.bundle, &answers, &by_hand, &["--yes"]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(layout(&lab.node_root(name)), layout(&by_hand), "{name}: the trees differ");
        let mut over_ssh = config(&lab.node_root(name));
        let mut manual = config(&by_hand);
        for c in [&mut over_ssh, &mut manual] {
            c.remove(serde_yaml::Value::String("token".into()));
        }
        assert_eq!(over_ssh, manual, "{name}: config.yaml differs");
    }
}

#[test]
fn cluster_install_changes_nothing_anywhere_when_one_nodes_preflight_fails_or_its_incoming_dir_is_a_symlink() {
    let Some((lab, _turn)) = lab() else { return };
    let work = tempfile::tempdir().unwrap();
    let s1 = work.path().join("s1");
    // A K3s that airlock did not install, on s3.
    let foreign = lab.node_root("s3").join("usr/local/bin/k3s");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    std::fs::write(&foreign, "#!/bin/sh\n").unwrap();
    // On s2, the incoming directory is a symbolic link out of its root.
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(lab.node_root("s2").join("var/lib/airlock")).unwrap();
    std::os::unix::fs::symlink(&outside, lab.node_root("s2").join(INCOMING)).unwrap();
    // On w1, nm-cloud-setup is enabled.
    nm_cloud_setup_enabled(&lab.node_root("w1"));
    let cfg = lab.ssh_config("preflight", &lab.host_keys, "id_ed25519");
    let answers = lab.answers("preflight", "");
    // An override for a node the answers do not list is an answer error naming it,
    // before any node is contacted.
    let o = lab.install_cmd(&s1, &answers, &cfg, &[]).args(["--override", "w9:nm-cloud-setup"]).output().unwrap();
    let out = text(&o);
    assert!(!o.status.success() && out.contains("w9:nm-cloud-setup") && out.contains("names node `w9`"), "{out}");
    assert!(!lab.node_root("w1").join(INCOMING).exists(), "a node was contacted: {out}");
    let o = lab.install(&s1, &answers, &cfg, &[]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let out = text(&o);
    assert!(node_line(&out, "w1").contains("FAILED at preflight"), "{out}");
    let w1 = &out[out.rfind("  w1 ").unwrap()..];
    assert!(w1.lines().take(20).any(|l| l.contains("nm-cloud-setup")), "{out}");
    assert!(out.contains("s3") && out.contains("FAILED at preflight") && out.contains("existing-install"), "{out}");
    assert!(out.contains("nothing was installed on any node"), "{out}");
    assert!(lab.node_root("w1").join(INCOMING).join("demo.airlock").is_file(), "a failed run removed what it sent");
    let s2 = &out[out.find("  s2 ").unwrap()..];
    assert!(s2.lines().take(3).any(|l| l.contains("is a symbolic link")), "{out}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something was written through the link");
    assert!(!s1.join("etc/rancher/k3s/config.yaml").exists(), "the first server was installed");
    for (name, _, _) in NODES {
        assert!(!lab.node_root(name).join("etc/rancher").exists(), "{name} was installed");
    }
}

#[test]
fn cluster_install_names_each_node_it_cannot_reach_and_why() {
    let Some((lab, _turn)) = lab() else { return };
    let work = tempfile::tempdir().unwrap();
    let s1 = work.path().join("s1");
    // s2: a host key that is not its own; s3: a login its sshd refuses (set per node in
    // the answers); w1: its link dropped.
    let mut known = lab.host_keys.clone();
    known[0] = lab.host_keys[1].clone();
    let cfg = lab.ssh_config("faults", &known, "id_ed25519");
    let answers = lab.answers("faults", "").display().to_string();
    let text_in = std::fs::read_to_string(&answers).unwrap().replace(
        &format!("{{name: s3, address: {NET}.13, role: server}}"),
        &format!("{{name: s3, address: {NET}.13, role: server, ssh_user: nosuchuser}}"),
    );
    std::fs::write(&answers, text_in).unwrap();
    let veth = &lab.ns[2].1;
    sh(&format!("ip link set {veth} down"));
    let o = lab.install(&s1, Path::new(&answers), &cfg, &[]);
    sh(&format!("ip link set {veth} up"));
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let out = text(&o);
    let block = |name: &str| -> String {
        let start = out.find(&format!("  {name} ")).unwrap_or_else(|| panic!("no line for {name}: {out}"));
        out[start..].lines().take(3).collect::<Vec<_>>().join("\n")
    };
    assert!(block("s2").contains("host key not trusted"), "{}", block("s2"));
    assert!(block("s3").contains("SSH authentication refused"), "{}", block("s3"));
    assert!(block("w1").contains("unreachable") || block("w1").contains("No route"), "{}", block("w1"));
    assert!(!s1.join("etc/rancher/k3s/config.yaml").exists(), "the first server was installed");
}

/// Enables nm-cloud-setup below `root` as `systemctl enable` would: its preflight
/// check fails (the unit refuses to start K3s while it is enabled).
fn nm_cloud_setup_enabled(root: &Path) {
    let wants = root.join("etc/systemd/system/timers.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::fs::write(wants.join("nm-cloud-setup.timer"), "[Timer]\n").unwrap();
}

fn bytes_sent(out: &str, name: &str) -> u64 {
    let line = node_line(out, name);
    line.rsplit(", ").next().and_then(|t| t.strip_suffix(" bytes sent")).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// A transfer cut mid-part (the stand-in hook stops the stream at a byte offset, as a
/// dropped link does) leaves its bytes on the node and the re-run sends only the rest;
/// on s3 those kept bytes are damaged, which the verify there finds against the signed
/// checksum list: the part is sent again whole before anything else happens there.
#[test]
fn cluster_transfer_cut_mid_part_resumes_from_the_node_and_a_damaged_partial_is_sent_again_whole() {
    let Some((lab, _turn)) = lab() else { return };
    let work = tempfile::tempdir().unwrap();
    let s1 = work.path().join("s1");
    let cfg = lab.ssh_config("resume", &lab.host_keys, "id_ed25519");
    let answers = lab.answers("resume", "");
    let part = std::fs::read(&lab.bundle).unwrap();
    let cut = part.len() as u64 / 3;
    let cuts = format!("s2:{cut},s3:{cut}");
    let o = lab.install(&s1, &answers, &cfg, &[("AIRLOCK_TEST_CLUSTER_CUT_TRANSFER", &cuts)]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let first = text(&o);
    assert!(node_line(&first, "s2").contains("FAILED at send"), "{first}");
    assert_eq!(bytes_sent(&first, "s2"), cut, "{first}");
    let whole = bytes_sent(&first, "w1");
    assert!(whole > part.len() as u64, "{first}");
    let partial = |name: &str| lab.node_root(name).join(INCOMING).join(".demo.airlock.partial");
    assert_eq!(std::fs::metadata(partial("s2")).unwrap().len(), cut);
    // Damaged on s3's disk while the link was down.
    let mut kept = std::fs::read(partial("s3")).unwrap();
    kept[1000] ^= 0xff;
    std::fs::write(partial("s3"), kept).unwrap();
    // The re-run stops before any install: a K3s that airlock did not install on w1.
    let foreign = lab.node_root("w1").join("usr/local/bin/k3s");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    std::fs::write(&foreign, "#!/bin/sh\n").unwrap();

    let o = lab.install(&s1, &answers, &cfg, &[]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let out = text(&o);
    // s2: the rest of the part (and the files after it), nothing twice.
    assert!(node_line(&out, "s2").contains("ready (bundle verified there"), "{out}");
    assert_eq!(bytes_sent(&out, "s2"), whole - cut, "{out}");
    // s3: the rest, then, once its verify found the part damaged, the part again whole.
    assert!(node_line(&out, "s3").contains("ready (bundle verified there"), "{out}");
    assert_eq!(bytes_sent(&out, "s3"), whole - cut + part.len() as u64, "{out}");
    assert_eq!(bytes_sent(&out, "w1"), 0, "w1 had everything: {out}");
    for name in ["s2", "s3"] {
        let there = std::fs::read(lab.node_root(name).join(INCOMING).join("demo.airlock")).unwrap();
        assert!(there == part, "{name}: the bundle on the node differs from the original");
        assert!(!partial(name).exists());
        assert!(!lab.node_root(name).join("etc/rancher").exists(), "{name} was installed");
    }
}

/// Every file and link below a root with its full digest, without the upgrade's own
/// records (journals, lock, backups, release store, staging) and the incoming files:
/// what "back on v1 byte for byte" is measured on. The first server's node journals
/// are part of it.
fn exact(root: &Path) -> std::collections::BTreeMap<String, String> {
    let skip = [
        "/var/lib/airlock/upgrade.json",
        "/var/lib/airlock/upgrade-history.json",
        "/var/lib/airlock/endpoint-checks.json",
        "/var/lib/airlock/journal.json",
        "/var/lib/airlock/lock",
        "/var/lib/airlock/cluster.lock",
        "/var/lib/airlock/upgrade.lock",
        "/var/lib/airlock/backup",
        "/var/lib/airlock/backups",
        "/var/lib/airlock/releases",
        "/var/lib/airlock/staging",
        "/var/lib/airlock/incoming",
    ];
    walk(
        root,
        |rel| !skip.iter().any(|s| rel == *s || rel.starts_with(&format!("{s}/"))),
        |_, path, mode| {
            let bytes = std::fs::read(path).unwrap();
            format!("file {mode:04o} {}", hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)))
        },
    )
}

fn changes(
    a: &std::collections::BTreeMap<String, String>,
    b: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut out: Vec<String> =
        a.iter().filter(|(k, v)| b.get(*k) != Some(v)).map(|(k, v)| format!("before: {k} {v}")).collect();
    out.extend(b.iter().filter(|(k, v)| a.get(*k) != Some(v)).map(|(k, v)| format!("after: {k} {v}")));
    out
}

fn release_version(root: &Path) -> String {
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("var/lib/airlock/release.json")).unwrap()).unwrap();
    r["version"].as_str().unwrap_or_default().to_string()
}

/// The cluster's upgrade from its first server: node 3's gate failing puts nodes 3, 2
/// and 1 back on v1 byte for byte (the agent never left it) and names node 3 and the
/// cause; a run crashed after node 2 then resumes without redoing it and leaves every
/// node on v2. Then `support-bundle --all-nodes` (no secret in it) and `uninstall
/// --all-nodes` with one node unreachable (on the same
/// cluster: one install fewer for the test binary).
#[test]
fn cluster_upgrade_rolls_back_when_node_3_fails_resumes_to_v2_then_all_nodes_support_bundle_and_uninstall() {
    let Some((lab, _turn)) = lab() else { return };
    let work = tempfile::tempdir().unwrap();
    let s1 = work.path().join("s1");
    let cfg = lab.ssh_config("upgrade", &lab.host_keys, "id_ed25519");
    // w1's nm-cloud-setup check fails; accepted for w1 alone, journaled there.
    nm_cloud_setup_enabled(&lab.node_root("w1"));
    let o = lab
        .install_cmd(&s1, &lab.answers("upgrade", ""), &cfg, &[])
        .args(["--override", "w1:nm-cloud-setup"])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(node_line(&out, "w1").contains("joined, overridden: nm-cloud-setup"), "{out}");
    assert!(!node_line(&out, "s2").contains("overridden"), "{out}");
    // Each node's install journal: the overrides its preflight applied.
    let overridden = |root: &Path| -> Vec<String> {
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("var/lib/airlock/journal.json")).unwrap()).unwrap();
        // (Left out when there is none.)
        let records = j["preflight_overrides"].as_array().cloned().unwrap_or_default();
        records.iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(overridden(&lab.node_root("w1")), ["nm-cloud-setup"]);
    assert!(overridden(&s1).is_empty() && overridden(&lab.node_root("s2")).is_empty());
    std::fs::remove_dir_all(lab.node_root("w1").join("etc/systemd/system/timers.target.wants")).unwrap();
    let v2 = lab.v2().to_path_buf();
    let roots: Vec<(&str, PathBuf)> =
        std::iter::once(("s1", s1.clone())).chain(NODES.iter().map(|(n, _, _)| (*n, lab.node_root(n)))).collect();
    let before: Vec<_> = roots.iter().map(|(_, r)| exact(r)).collect();

    let o = lab.upgrade(&s1, &v2, &cfg, &[("AIRLOCK_TEST_CLUSTER_GATE_FAIL", "s3")]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(13), "{out}");
    assert!(
        out.contains("node s3: the cluster's upgrade 1.0.0 → 1.1.0 failed: health") && out.contains("injected"),
        "{out}"
    );
    assert!(out.contains("every node upgraded was put back on 1.0.0"), "{out}");
    assert!(node_line(&out, "s3").contains("FAILED at health"), "{out}");
    assert!(node_line(&out, "s2").contains("put back") && node_line(&out, "s1").contains("put back"), "{out}");
    assert!(node_line(&out, "w1").contains("skipped"), "{out}");
    assert!(lab.node_root("s2").join(INCOMING).join("demo.airlock").is_file(), "a failed run removed what it sent");
    for ((name, root), was) in roots.iter().zip(&before) {
        let now = exact(root);
        let d = changes(was, &now);
        assert!(d.is_empty(), "{name} is not back on v1 byte for byte:\n{}", d.join("\n"));
        assert_eq!(release_version(root), "1.0.0", "{name}");
    }

    // Crashed right after node 2 is upgraded, then run again: node 2 is checked, not
    // upgraded again, and the others go on.
    let o = lab.upgrade(&s1, &v2, &cfg, &[("AIRLOCK_TEST_CLUSTER_CRASH_AFTER", "s2")]);
    assert!(!o.status.success(), "the injected crash did not happen: {}", text(&o));
    assert_eq!(release_version(&lab.node_root("s2")), "1.1.0");
    assert_eq!(release_version(&lab.node_root("s3")), "1.0.0");
    let o = lab.upgrade(&s1, &v2, &cfg, &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(node_line(&out, "s2").contains("not redone"), "{out}");
    assert!(node_line(&out, "s3").contains("upgraded") && node_line(&out, "w1").contains("upgraded"), "{out}");
    for (name, root) in &roots {
        assert_eq!(release_version(root), "1.1.0", "{name}");
        assert!(!root.join(INCOMING).exists(), "{name} keeps its incoming files");
    }
    let st = Command::new(cargo_bin("airlock")).args(["status", "--root"]).arg(&s1).output().unwrap();
    let st = text(&st);
    assert!(
        NODES.iter().all(|(n, _, _)| st.contains(&format!("node        {n} ("))) && st.contains("1.1.0: joined"),
        "{st}"
    );

    // `support-bundle --all-nodes`: every node's own bundle in a folder of the one
    // archive, and no secret of the site in any of it.
    let archive = work.path().join("support.tar.gz");
    let o = Command::new(cargo_bin("airlock"))
        .args(["support-bundle", "--all-nodes", "--root"])
        .arg(&s1)
        .arg("-o")
        .arg(&archive)
        .arg("--ssh-config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let mut names = Vec::new();
    let mut all = Vec::new();
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap());
    for e in tar::Archive::new(gz).entries().unwrap() {
        let mut e = e.unwrap();
        names.push(e.path().unwrap().display().to_string());
        std::io::Read::read_to_end(&mut e, &mut all).unwrap();
    }
    let all = String::from_utf8_lossy(&all);
    for (n, _, _) in NODES {
        assert!(names.iter().any(|x| x.starts_with(&format!("nodes/{n}/files/"))), "no files of {n}: {names:?}");
    }
    let manifest = names.iter().filter(|x| x.ends_with("MANIFEST.json")).count();
    assert_eq!(manifest, 4, "{names:?}");
    let secrets = std::fs::read_dir(s1.join("var/lib/airlock/secrets")).unwrap();
    let mut checked = 0;
    for e in secrets {
        let v = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        let v = v.trim();
        if v.len() >= 8 {
            assert!(!all.contains(v), "a secret of the site is in the support archive");
            checked += 1;
        }
    }
    assert!(checked >= 2, "the site has no secrets to look for");

    // `uninstall --all-nodes` with w1's link down: w1 is named with its cause, every
    // other node and this one are uninstalled (the lab is not installed twice for this).
    let veth = &lab.ns[2].1;
    sh(&format!("ip link set {veth} down"));
    let o = Command::new(cargo_bin("airlock"))
        .args(["uninstall", "--all-nodes", "--yes", "--root"])
        .arg(&s1)
        .arg("--ssh-config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    sh(&format!("ip link set {veth} up"));
    let out = text(&o);
    assert_eq!(o.status.code(), Some(11), "{out}");
    assert!(node_line(&out, "w1").contains("FAILED"), "{out}");
    let w1_cause = out[out.rfind("  w1 ").unwrap()..].lines().nth(1).unwrap_or("").to_string();
    assert!(w1_cause.contains("unreachable") || w1_cause.contains("No route"), "{out}");
    for (name, root) in &roots[1..] {
        let installed = root.join("etc/rancher/k3s/config.yaml").exists();
        assert_eq!(installed, *name == "w1", "{name}: installed {installed}:\n{out}");
        if *name != "w1" {
            assert!(!root.join(INCOMING).exists(), "{name} keeps its incoming files");
            assert!(node_line(&out, name).contains("uninstalled"), "{out}");
        }
    }
    // The first server stays, with what a re-run needs; it forgets the nodes it
    // uninstalled, and the re-run, with w1 back, finishes w1 and then itself.
    assert!(node_line(&out, "s1").contains("kept until every other node"), "{out}");
    let journals = s1.join("var/lib/airlock/cluster");
    assert!(!journals.join("s2.json").exists() && journals.join("w1.json").exists(), "{out}");
    let o = Command::new(cargo_bin("airlock"))
        .args(["uninstall", "--all-nodes", "--yes", "--root"])
        .arg(&s1)
        .arg("--ssh-config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for (name, root) in &roots {
        assert!(!root.join("etc/rancher/k3s/config.yaml").exists(), "{name} is still installed:\n{out}");
    }
}
