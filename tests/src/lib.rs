//! Support for the end-to-end tests: finding the real third-party tools and starting
//! the real components (containerd, registry, slapd) they run against.
//!
//! A test that needs a tool calls [`require_tool`]. When the tool is missing the test
//! is skipped with a visible reason, except when `AIRLOCK_REQUIRE_TOOLS=1` (set by
//! `tests/run.sh`, and so in CI): then a missing tool fails the test, because a green
//! run that silently skipped the real checks would be a lie.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod http;
pub mod keycloak;
pub mod live;
pub mod postgres;
pub mod prompter;
pub mod registry;
pub mod s3;
pub mod slapd;
pub mod tree;

/// Finds `name` on `PATH` (or in `AIRLOCK_TOOLS_DIR`, where `tests/run.sh` puts the
/// helm binary it unpacks). Returns `None` after printing why the caller skips.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("AIRLOCK_TOOLS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    for d in dirs {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    if std::env::var("AIRLOCK_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!(
            "required tool `{name}` is not installed (AIRLOCK_REQUIRE_TOOLS=1); run tests/run.sh, which installs it"
        );
    }
    eprintln!("SKIPPED: `{name}` is not installed; run tests/run.sh to install it and run this test for real");
    None
}

/// Skips (prints `SKIPPED: reason`, returns `None`) or, under
/// `AIRLOCK_REQUIRE_TOOLS=1`, fails the test: the same policy as [`require_tool`] for
/// prerequisites that are not a single tool (root, a tool's version, ...).
pub fn skip_or_fail<T>(reason: &str) -> Option<T> {
    if std::env::var("AIRLOCK_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{reason} (AIRLOCK_REQUIRE_TOOLS=1); run tests/run.sh as root, which installs what the tests need");
    }
    eprintln!("SKIPPED: {reason}; run tests/run.sh (as root) to run this test for real");
    None
}

/// The version of helm K3s' helm-controller runs (Helm 3); charts are tested with it.
pub const HELM_VERSION_PREFIX: &str = "v3.18";

/// The helm 3.18 binary: `AIRLOCK_TOOLS_DIR/helm` (where `tests/run.sh` installs it)
/// or the first `helm` on `PATH` whose `helm version --template '{{.Version}}'`
/// starts with `v3.18`. Skips or fails like [`require_tool`] when there is none.
pub fn helm() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("AIRLOCK_TOOLS_DIR") {
        candidates.push(PathBuf::from(d).join("helm"));
    }
    if let Some(p) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&p).map(|d| d.join("helm")));
    }
    let mut seen = Vec::new();
    for c in candidates.into_iter().filter(|c| c.is_file()) {
        let version = Command::new(&c)
            .args(["version", "--template", "{{.Version}}"])
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if version.starts_with(HELM_VERSION_PREFIX) {
            return Some(c);
        }
        seen.push(format!("{} ({})", c.display(), if version.is_empty() { "?" } else { &version }));
    }
    skip_or_fail(&format!(
        "helm {HELM_VERSION_PREFIX}.x is not installed (found: {})",
        if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
    ))
}

/// A `helm` command whose config, cache and data dirs live under `home` (a temp dir
/// of the test), so helm keeps no state in the real `~`.
pub fn helm_command(helm: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(helm);
    cmd.env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .stdin(Stdio::null());
    cmd
}

/// The workspace's root directory (the one with the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent directory").to_path_buf()
}

/// The path of the workspace binary `name` built by the same cargo invocation as the
/// running test: `target/<profile>/<name>`, found as assert_cmd does (the directory
/// of the test executable, minus a trailing `deps`). `cargo test --workspace` builds
/// every binary of the workspace; `cargo test -p airlock-tests` alone does not.
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test executable has a parent").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "binary `{name}` not found at {}: build it first (`cargo build --workspace`, or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// Whether the test runs as root (real uid 0), read from `/proc/self/status`.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Writes a plain tar of everything under `dir` to `out`: entry names relative to
/// `dir` without a `./` prefix (as an oci-archive has them), sorted, mtime 0, uid/gid
/// 0. Tarring an OCI image layout this way gives an archive containerd imports (it
/// must contain the `oci-layout` file).
pub fn tar_directory(dir: &Path, out: &Path) -> Result<()> {
    let file = fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry?;
        let rel = entry.path().strip_prefix(dir)?;
        builder
            .append_path_with_name(entry.path(), rel)
            .with_context(|| format!("add {} to {}", entry.path().display(), out.display()))?;
    }
    builder.into_inner()?.flush()?;
    Ok(())
}

static NAMESPACE_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn fresh_namespace() -> String {
    format!("airlock-test-{}-{}", std::process::id(), NAMESPACE_COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// A private, real containerd (as in `shared/lab/02-containerd.sh`): its own config,
/// root, state and sockets in a temp dir, the CRI plugin disabled (no CNI needed).
/// Killed (by its PID) when dropped. Needs root and the `containerd` and `ctr` binaries.
///
/// Every [`Containerd::import`] goes into a **fresh namespace**, because a blob that is
/// already present from an earlier import would hide one missing from the archive;
/// [`Containerd::ctr`] then works in the namespace of the latest import.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    sock: PathBuf,
    ctr: PathBuf,
    namespace: Mutex<String>,
}

impl Containerd {
    /// Starts the daemon and waits (up to 20 s) until `ctr version` answers on its
    /// socket. `None` (skip) or panic (`AIRLOCK_REQUIRE_TOOLS=1`) when not root or the
    /// binaries are missing; panics when the daemon does not come up.
    pub fn start() -> Option<Containerd> {
        let containerd = require_tool("containerd")?;
        let ctr = require_tool("ctr")?;
        if !is_root() {
            return skip_or_fail("containerd tests need root");
        }
        Some(Self::start_with(&containerd, ctr).expect("start a private containerd"))
    }

    fn start_with(containerd: &Path, ctr: PathBuf) -> Result<Containerd> {
        let dir = tempfile::Builder::new().prefix("airlock-containerd.").tempdir()?;
        let d = dir.path();
        let sock = d.join("containerd.sock");
        let config = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  level = \"info\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = sock.display(),
        );
        fs::write(d.join("config.toml"), config)?;
        let log = fs::File::create(d.join("containerd.log"))?;
        let child = Command::new(containerd)
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", containerd.display()))?;
        let mut cd = Containerd { dir, child, sock, ctr, namespace: Mutex::new(fresh_namespace()) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = cd.child.try_wait()? {
                bail!("containerd exited early ({status}); log:\n{}", cd.log());
            }
            if cd.sock.exists() && cd.ctr(&["version"]).status.success() {
                return Ok(cd);
            }
            if Instant::now() > deadline {
                bail!("containerd did not answer on {} within 20 s; log:\n{}", cd.sock.display(), cd.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.sock
    }

    /// The namespace [`Containerd::ctr`] currently works in.
    pub fn namespace(&self) -> String {
        self.namespace.lock().unwrap().clone()
    }

    /// Switches to a fresh, empty namespace and returns its name.
    pub fn new_namespace(&self) -> String {
        let ns = fresh_namespace();
        *self.namespace.lock().unwrap() = ns.clone();
        ns
    }

    /// Runs `ctr -a SOCK -n NAMESPACE ARGS...` and returns its output (not checked).
    pub fn ctr<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        Command::new(&self.ctr)
            .arg("-a")
            .arg(&self.sock)
            .arg("-n")
            .arg(self.namespace())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// Imports `archive` (an uncompressed docker-archive or OCI-layout tar) into a fresh
    /// namespace with `ctr images import --all-platforms` (K3s imports all platforms
    /// too, so an index naming a platform whose blobs are missing fails here as it
    /// would there) and returns `ctr images ls -q` of that namespace.
    pub fn import(&self, archive: &Path) -> Result<Vec<String>> {
        self.new_namespace();
        let out =
            self.ctr(&[OsStr::new("images"), OsStr::new("import"), OsStr::new("--all-platforms"), archive.as_os_str()]);
        if !out.status.success() {
            bail!(
                "ctr images import {} failed ({}): {}{}",
                archive.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.images()
    }

    /// `ctr images ls -q` in the current namespace, sorted.
    pub fn images(&self) -> Result<Vec<String>> {
        let out = self.ctr(&["images", "ls", "-q"]);
        if !out.status.success() {
            bail!("ctr images ls failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SIGTERM by PID, up to 5 s to exit, then SIGKILL.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).stdin(Stdio::null()).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // No mount under the temp dir may outlive it (a test may have run a container).
        let prefix = format!("{}/", self.dir.path().display());
        if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
            let mut points: Vec<&str> =
                mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&prefix)).collect();
            points.sort_unstable_by(|a, b| b.cmp(a));
            for m in points {
                let _ = Command::new("umount").arg(m).stdin(Stdio::null()).status();
            }
        }
    }
}

/// The embedded example's directory (`examples/demo`).
pub fn demo_dir() -> PathBuf {
    workspace_root().join("examples/demo")
}

/// Builds the embedded example's bundle at `dir/demo.airlock` with the demo key and a
/// fixed `SOURCE_DATE_EPOCH`, passing `extra` flags to `airlock-bundler create`.
pub fn build_demo_bundle(dir: &Path, extra: &[&str]) -> PathBuf {
    build_spec(&demo_dir().join("bundle.yaml"), dir, extra)
}

/// The demo bundle without the charts whose spec lines contain one of `charts` (e.g.
/// `keycloakx`, which refuses an HA install without an external database): for tests
/// of something else that use the HA profile. The variant spec lives in the demo
/// directory for the time of the build (its paths are relative to it).
pub fn build_demo_bundle_without(dir: &Path, charts: &[&str]) -> PathBuf {
    let spec = std::fs::read_to_string(demo_dir().join("bundle.yaml")).expect("the demo spec");
    let kept: String = spec
        .lines()
        .filter(|l| !(l.trim_start().starts_with("- path: charts/") && charts.iter().any(|c| l.contains(c))))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept.len(), spec.len(), "no chart line of the demo spec names {charts:?}");
    build_demo_variant(&kept, dir, &[])
}

/// `airlock CMD BUNDLE --pubkey <demo key> --answers ANSWERS --root ROOT EXTRA...`
/// with no stdin: how the install, join and platform tests run the installer.
pub fn airlock_with_answers(
    cmd: &str,
    bundle: &Path,
    answers: &Path,
    root: &Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(cargo_bin("airlock"))
        .arg(cmd)
        .arg(bundle)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--answers")
        .arg(answers)
        .arg("--root")
        .arg(root)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("airlock runs")
}

/// `airlock-bundler create SPEC -o OUT --key KEY` at a fixed creation time, stdin
/// closed; callers add a cache, environment or further flags.
pub fn create_command(spec: &Path, out: &Path, key: &Path) -> Command {
    let mut cmd = Command::new(cargo_bin("airlock-bundler"));
    cmd.env("SOURCE_DATE_EPOCH", "1795305600")
        .arg("create")
        .arg(spec)
        .arg("-o")
        .arg(out)
        .arg("--key")
        .arg(key)
        .stdin(Stdio::null());
    cmd
}

/// `airlock-bundler create SPEC -o OUT` with the demo key, a fixed creation time and
/// its own blob cache: how the registry and repository tests build.
pub fn create_with_cache(spec: &Path, cache: &Path, out: &Path) -> std::process::Output {
    create_command(spec, out, &demo_dir().join("keys/demo.key"))
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .expect("airlock-bundler runs")
}

/// A bundle from a variant of the demo spec (`spec` is its whole text: another
/// version, a chart left out, an `upgrade:` policy), written to `dir/demo.airlock`.
/// The variant lives in the demo directory for the time of the build, since its paths
/// are relative to it.
pub fn build_demo_variant(spec: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let variant = demo_dir().join(format!(".test-spec-{}-{nanos}.yaml", std::process::id()));
    std::fs::write(&variant, spec).expect("the variant spec is written");
    let out = std::panic::catch_unwind(|| build_spec(&variant, dir, extra));
    let _ = std::fs::remove_file(&variant);
    out.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn build_spec(spec: &Path, dir: &Path, extra: &[&str]) -> PathBuf {
    let out = dir.join("demo.airlock");
    let o = Command::new(cargo_bin("airlock-bundler"))
        .env("SOURCE_DATE_EPOCH", "1795305600")
        .arg("create")
        .arg(spec)
        .arg("-o")
        .arg(&out)
        .arg("--key")
        .arg(demo_dir().join("keys/demo.key"))
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("airlock-bundler runs");
    assert!(o.status.success(), "airlock-bundler create failed: {}", String::from_utf8_lossy(&o.stderr));
    out
}
