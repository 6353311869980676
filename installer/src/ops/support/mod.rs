//! `airlock support-bundle`: everything support needs from a node, in one archive,
//! with every secret taken out.
//!
//! What is collected (each a section of the archive):
//! - `state/`: the installer's journal, release record and inventory;
//! - `status.json`: what `airlock status` reports (drift, certificates, last run);
//! - `preflight/`: the site preflight for the installed profile when the staged bundle
//!   still has it, else the host facts preflight would judge;
//! - `files/<target path>`: the rendered configs — `/etc/rancher`, `/etc/airlock`, the
//!   installed unit files and env files, the auto-deploy manifests directory;
//! - live hosts only: `logs/<unit>.log` (`journalctl`) and `cluster/` (nodes, pods,
//!   events, HelmCharts, jobs as YAML; the helm-install jobs' logs), each bounded.
//!
//! Every collected text goes through [`redact::Redactor`]: the values of the files
//! under `/var/lib/airlock/secrets` wherever they appear, private key blocks, Secret
//! data, credential fields and variables. Key files and the secrets directory are
//! never read into the archive at all. `MANIFEST.json` (the first entry) lists every
//! collected file with its size and redactions per rule — counts, never values — and
//! everything that could not be collected, with why. A broken site (no API server, no
//! journal, unreadable files) still yields a bundle of what could be reached.
//!
//! Reading goes through the [`Host`] seam (files, listings, commands); [`list_files`]
//! (`host/walk.rs`)
//! refuses to follow symlinks, so a link in a target root never leads anywhere else. The archive
//! itself is written to a path of the machine running airlock (like `extract -d`), 0600
//! from its creation, via a temp file renamed into place.

pub mod redact;

use crate::state;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::report::{Event, Reporter};
use serde::Serialize;

use crate::engine::Journal;
use crate::host::{list_files, Host};

use crate::ops::status::{self, StatusOptions};
use crate::state::Inventory;
use crate::state::ReleaseRecord as Release;
use redact::{Counts, Redactor};

/// Format version of `MANIFEST.json`.
pub const MANIFEST_VERSION: u32 = 1;
/// How long one request of the support bundle may take: longer than a status look,
/// since everything is asked once and a slow answer is still worth having.
const SUPPORT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Limits and where to write.
#[derive(Clone, Debug)]
pub struct SupportOptions {
    /// The archive to write: `.tar.zst`/`.tzst` is zstd, anything else gzip.
    pub output: PathBuf,
    /// Bytes kept of one collected file (the rest is cut and the cut noted).
    pub max_file_bytes: usize,
    /// Bytes kept of one command's output (cluster state, logs).
    pub max_command_bytes: usize,
    /// Lines of the distribution's service log.
    pub log_lines: u32,
    /// `--all-nodes`: each other node's own support archive (gzip tar, redacted there
    /// with that node's secrets), or why it could not be fetched. Each entry goes into
    /// `nodes/<node>/`, redacted once more here (this node knows the site's generated
    /// secrets, which a node may not).
    pub nodes: Vec<(String, std::result::Result<Vec<u8>, String>)>,
}

impl SupportOptions {
    pub fn new(output: PathBuf) -> Self {
        Self { output, max_file_bytes: 4 << 20, max_command_bytes: 8 << 20, log_lines: 5000, nodes: Vec::new() }
    }
}

/// One file in the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Collected {
    /// The name in the archive.
    pub name: String,
    /// Where it came from: a target path or a command line.
    pub source: String,
    /// Bytes in the archive (after redaction).
    pub size: u64,
    /// Rule → values replaced in this file.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub redactions: Counts,
    /// Cut at the size limit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Something support may have wanted that is not in the archive, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub source: String,
    pub reason: String,
}

/// `MANIFEST.json`: what is in the archive and what was taken out of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SupportManifest {
    pub version: u32,
    pub created: String,
    pub root: PathBuf,
    pub live: bool,
    pub files: Vec<Collected>,
    /// Rule → values replaced in the whole archive.
    pub redactions: Counts,
    /// Generated secrets known by value (their count, never their content).
    pub secret_values_known: usize,
    pub not_collected: Vec<Missing>,
    /// The run that was working on the site while this was collected (its state files
    /// may be mid-change), as "another airlock run (pid N, started T, command C)".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_run: Option<String>,
}

/// What [`collect`] did: the manifest written into the archive, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SupportReport {
    pub output: PathBuf,
    pub archive_bytes: u64,
    pub manifest: SupportManifest,
}

/// Files that hold keys or credentials by their nature: never read into a bundle,
/// whatever redaction could do with them.
pub fn is_key_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    path.starts_with(state::SECRETS_DIR)
        || [".key", "-key.pem", "_key.pem", ".key.pem", ".p12", ".pfx", ".jks", ".keystore"]
            .iter()
            .any(|s| name.ends_with(s))
        || name == "key.pem"
        // A bare credential file (`/etc/rancher/node/password`, a copied `/root/cluster-token`);
        // a manifest or config named after a secret is collected, redacted.
        || (["password", "token", "secret", "passphrase"].iter().any(|s| name.contains(s))
            && ![".yaml", ".yml", ".json", ".conf", ".toml", ".service", ".env"].iter().any(|e| name.ends_with(e)))
}

/// The archive being assembled in memory (bounded by the per-item limits).
struct Bundle<'a> {
    host: &'a dyn Host,
    opts: &'a SupportOptions,
    redactor: Redactor,
    entries: Vec<(String, Vec<u8>)>,
    manifest: SupportManifest,
}

impl Bundle<'_> {
    fn missing(&mut self, source: impl Into<String>, reason: impl Into<String>) {
        self.manifest.not_collected.push(Missing { source: source.into(), reason: reason.into() });
    }

    /// Adds text under `name`, redacted, cut at `limit` bytes.
    fn add_text(&mut self, name: &str, source: &str, text: &str, limit: usize) {
        let (text, truncated) = cut(text, limit);
        let (mut clean, counts) = self.redactor.redact_file(name, text);
        if truncated {
            clean.push_str(&format!("\n[airlock: cut at {limit} bytes]\n"));
        }
        for (rule, n) in &counts {
            *self.manifest.redactions.entry(rule.clone()).or_default() += n;
        }
        self.manifest.files.push(Collected {
            name: name.to_string(),
            source: source.to_string(),
            size: clean.len() as u64,
            redactions: counts,
            truncated,
        });
        self.entries.push((name.to_string(), clean.into_bytes()));
    }

    fn add_json(&mut self, name: &str, source: &str, value: &impl Serialize) {
        let text = serde_json::to_string_pretty(value).expect("reports serialise");
        self.add_text(name, source, &text, usize::MAX);
    }

    /// A target file, as `files/<path>` (or `name`), unless it is a key file or binary.
    fn add_file(&mut self, path: &Path, name: Option<&str>) {
        let source = path.display().to_string();
        if is_key_file(path) {
            return self.missing(source, "key or credential file: never collected");
        }
        let bytes = match self.host.open_file(path) {
            Ok(Some(r)) => {
                let mut buf = Vec::new();
                match r.take(self.opts.max_file_bytes as u64 + 1).read_to_end(&mut buf) {
                    Ok(_) => buf,
                    Err(e) => return self.missing(source, format!("reading failed: {e}")),
                }
            }
            Ok(None) => return self.missing(source, "does not exist"),
            Err(e) => return self.missing(source, e.cause),
        };
        if bytes.contains(&0) {
            return self.missing(source, "binary content (not a config or log)");
        }
        let name = name.map(str::to_string).unwrap_or_else(|| format!("files{}", path.display()));
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.add_text(&name, &source, &text, self.opts.max_file_bytes);
    }

    /// Every file below a target directory.
    fn add_tree(&mut self, dir: &Path) {
        match list_files(self.host, dir) {
            Ok(l) => {
                if l.files.is_empty() && l.skipped.is_empty() {
                    self.missing(dir.display().to_string(), "does not exist or is empty");
                }
                for s in l.skipped {
                    self.manifest
                        .not_collected
                        .push(Missing { source: s.path.display().to_string(), reason: s.reason });
                }
                for f in l.files {
                    self.add_file(&f, None);
                }
            }
            Err(e) => self.missing(dir.display().to_string(), e.cause),
        }
    }

    /// A command's output (live only), cut at the command limit.
    fn add_command(&mut self, name: &str, argv: &[&str]) {
        let source = argv.join(" ");
        match self.host.run(argv) {
            Ok(o) if o.success() => {
                let limit = self.opts.max_command_bytes;
                self.add_text(name, &source, &o.stdout, limit);
            }
            Ok(o) => {
                // What a failing command says may quote configuration: redacted too.
                let (said, _) = self.redactor.redact(o.stderr.trim());
                self.missing(source, format!("exited with status {}: {}", o.status, cut(&said, 2000).0));
            }
            Err(e) => self.missing(source, e.cause),
        }
    }
}

/// At most `limit` bytes of `text`, on a character boundary; whether it was cut.
fn cut(text: &str, limit: usize) -> (&str, bool) {
    if text.len() <= limit {
        return (text, false);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// Every file's content under the secrets directory: the values to redact.
fn secret_values(host: &dyn Host, missing: &mut Vec<Missing>) -> Vec<String> {
    let mut values = Vec::new();
    let listing = match list_files(host, Path::new(state::SECRETS_DIR)) {
        Ok(l) => l,
        Err(e) => {
            missing.push(Missing {
                source: state::SECRETS_DIR.into(),
                reason: format!("could not be listed: {}", e.cause),
            });
            return values;
        }
    };
    for f in listing.files {
        match host.read_file(&f) {
            Ok(Some(b)) => {
                let text = String::from_utf8_lossy(&b).into_owned();
                // A file of several values (`KEY=value` / `key: value` lines) counts
                // each value too, not only the whole content.
                for line in text.lines() {
                    if let Some((_, v)) = line.split_once('=').or_else(|| line.split_once(": ")) {
                        values.push(v.trim().trim_matches('"').to_string());
                    }
                }
                values.push(text.trim().to_string());
            }
            Ok(None) => {}
            Err(e) => missing.push(Missing {
                source: f.display().to_string(),
                reason: format!(
                    "secret could not be read, so its value cannot be redacted by value (rules still apply): {}",
                    e.cause
                ),
            }),
        }
    }
    values
}

/// Collects the support bundle and writes it to `opts.output`; see the module docs.
/// Fails only when the archive cannot be written: everything else that goes wrong is
/// noted in the manifest.
pub fn collect(host: &dyn Host, opts: &SupportOptions, reporter: &dyn Reporter) -> Result<SupportReport> {
    let mut not_collected = Vec::new();
    reporter.event(Event::Phase { name: "reading the secrets to redact", total: None });
    let secrets = secret_values(host, &mut not_collected);
    let redactor = Redactor::new(&secrets);
    if redactor.too_short > 0 {
        not_collected.push(Missing {
            source: state::SECRETS_DIR.into(),
            reason: format!(
                "{} generated value(s) shorter than {} characters are not redacted by value (rules still apply)",
                redactor.too_short,
                redact::MIN_VALUE_LEN
            ),
        });
    }
    let mut b = Bundle {
        host,
        opts,
        redactor,
        entries: Vec::new(),
        manifest: SupportManifest {
            version: MANIFEST_VERSION,
            created: airlock_format::manifest::rfc3339(unix_now()),
            root: host.root().to_path_buf(),
            live: host.live(),
            files: Vec::new(),
            redactions: Counts::new(),
            secret_values_known: secrets.iter().filter(|s| !s.trim().is_empty()).count(),
            not_collected,
            // Collected all the same: a support bundle is most wanted while a run hangs.
            working_run: state::site_holder(host)?.map(|h| format!("{h:#}")),
        },
    };

    reporter.event(Event::Phase { name: "collecting the installer's state", total: None });
    let journal = Journal::path(Path::new(state::STATE_DIR));
    for (path, name) in [
        (journal.as_path(), "state/journal.json"),
        (Path::new(state::RELEASE_PATH), "state/release.json"),
        (Path::new(state::INVENTORY_PATH), "state/installed.json"),
        (Path::new(crate::state::UPGRADE_JOURNAL_PATH), "state/upgrade.json"),
        (Path::new(crate::ops::upgrade::UPGRADE_HISTORY_PATH), "state/upgrade-history.json"),
        (Path::new(crate::live::ENDPOINT_CHECKS_PATH), "state/endpoint-checks.json"),
    ] {
        b.add_file(path, Some(name));
    }
    match status::status(host, &StatusOptions::now()) {
        Ok(s) => b.add_json("status.json", "airlock status", &s),
        Err(e) => b.missing("airlock status", e.to_string()),
    }
    let inventory = Inventory::load(host).ok();
    let release = Release::load(host).ok().flatten();

    reporter.event(Event::Phase { name: "preflight and host facts", total: None });
    preflight(&mut b, inventory.as_ref(), release.as_ref());

    reporter.event(Event::Phase { name: "collecting rendered configs", total: None });
    b.add_tree(Path::new("/etc/rancher"));
    b.add_tree(Path::new(crate::state::ETC_DIR));
    if let Some(inv) = &inventory {
        let mut units: Vec<PathBuf> = inv
            .files
            .iter()
            .map(|f| f.path.clone())
            .filter(|p| {
                let s = p.to_string_lossy();
                (s.contains("/systemd/") || s.ends_with(".service") || s.ends_with(".env"))
                    && !s.starts_with("/etc/rancher")
            })
            .collect();
        units.dedup();
        for u in units {
            b.add_file(&u, None);
        }
        let manifests: Vec<PathBuf> = status::manifest_files(inv);
        let mut dirs: Vec<PathBuf> = manifests.iter().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            b.add_tree(&d);
        }
    } else {
        b.missing(state::INVENTORY_PATH, "no inventory: unit files and manifests are not known");
    }

    if host.live() {
        live(&mut b, inventory.as_ref(), reporter);
    } else {
        let why = format!("target root {}: nothing runs there (not live)", host.root().display());
        b.missing("service logs (journalctl)", why.clone());
        b.missing("cluster state (kubectl)", why);
    }

    for (node, archive) in &opts.nodes {
        match archive.as_ref().map_err(String::clone).and_then(|a| node_entries(a)) {
            Ok(entries) => {
                for (name, text) in entries {
                    let source = format!("node {node}: {name}");
                    b.add_text(&format!("nodes/{node}/{name}"), &source, &text, opts.max_command_bytes);
                }
            }
            Err(why) => b.missing(format!("node {node}"), why),
        }
    }

    reporter.event(Event::Phase { name: "writing the archive", total: None });
    let archive_bytes = write_archive(&opts.output, &b.manifest, &b.entries)?;
    Ok(SupportReport { output: opts.output.clone(), archive_bytes, manifest: b.manifest })
}

/// The entries of a node's support archive (gzip tar) as text: every entry a support
/// archive holds is text (binary files are never collected).
fn node_entries(archive: &[u8]) -> std::result::Result<Vec<(String, String)>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let entries = tar.entries().map_err(|e| format!("its support archive cannot be read: {e}"))?;
    for e in entries {
        let mut e = e.map_err(|e| format!("its support archive cannot be read: {e}"))?;
        let name = e.path().map_err(|e| e.to_string())?.display().to_string();
        // Names stay inside the node's folder.
        if name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!("its support archive names an entry `{name}` outside it"));
        }
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).map_err(|e| format!("its support archive cannot be read: {e}"))?;
        out.push((name, String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(out)
}

/// The site preflight for the installed profile (when the staged bundle still holds
/// it), else the host facts alone.
fn preflight(b: &mut Bundle<'_>, inv: Option<&Inventory>, release: Option<&Release>) {
    use crate::site::answers::Role;
    use crate::site::preflight::site::{check, SiteInput};
    use crate::site::preflight::{collect as collect_facts, CollectOptions, Mode};

    let data_dir = inv
        .and_then(|i| i.runtime_dirs.first())
        .and_then(|d| d.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(crate::site::answers::DEFAULT_DATA_DIR));
    let profile = release.and_then(|r| {
        // The install keeps its staged bundle in the release store (`releases/current/bundle`);
        // installs from before the store left it in staging.
        let name = format!("{}.yaml", r.profile);
        let bytes = ["releases/current/bundle/profiles", "staging/current/profiles"]
            .iter()
            .find_map(|d| b.host.read_file(&Path::new(state::STATE_DIR).join(d).join(&name)).ok().flatten())?;
        crate::site::profile::Profile::from_bundle_entry(&String::from_utf8_lossy(&bytes), &r.profile).ok()
    });
    match profile {
        Some(p) => {
            let role = if inv.is_some_and(|i| i.unit.contains("agent")) { Role::Agent } else { Role::Server };
            let input = SiteInput {
                profile: &p,
                role,
                mode: Mode::Upgrade,
                image_bytes: 0,
                data_dir: data_dir.clone(),
                join_token_file: None,
                overrides: Vec::new(),
            };
            match check(b.host.root(), &input) {
                Ok(r) => b.add_json("preflight/report.json", &format!("preflight (profile {}, upgrade)", p.name), &r),
                Err(e) => b.missing("preflight", e.to_string()),
            }
        }
        None => b.missing(
            "preflight report",
            "the installed profile is not in the staging directory any more; host facts only",
        ),
    }
    let root = b.host.root().to_path_buf();
    let opts = CollectOptions { fsync_probe: None, ..CollectOptions::default() };
    // A data directory that cannot be resolved inside the root is measured at the root.
    let data_dir = b.host.real_path(&data_dir).unwrap_or_else(|_| root.clone());
    let facts = collect_facts(&root, &data_dir, &opts);
    b.add_json("host/facts.json", "preflight host facts", &facts);
}

/// Live only: the distribution's service log and the cluster's state.
fn live(b: &mut Bundle<'_>, inv: Option<&Inventory>, reporter: &dyn Reporter) {
    let Some(inv) = inv else {
        b.missing("service logs and cluster state", "no inventory: the unit and kubectl are not known");
        return;
    };
    reporter.event(Event::Phase { name: "collecting service logs", total: None });
    let lines = b.opts.log_lines.to_string();
    let unit = inv.unit.clone();
    b.add_command(&format!("logs/{unit}.log"), &["journalctl", "-u", &unit, "-n", &lines, "--no-pager"]);

    let Some(k) = inv.kube() else {
        b.missing("cluster state (kubectl)", format!("{unit} is an agent: it holds no API credentials"));
        return;
    };
    reporter.event(Event::Phase { name: "collecting cluster state", total: None });
    let k = k.with_timeout(SUPPORT_REQUEST_TIMEOUT);
    let argv = |extra: &[&str]| k.argv(extra);
    let run = |b: &mut Bundle<'_>, name: &str, extra: &[&str]| {
        let a = argv(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        b.add_command(name, &a);
    };
    // The first answer tells whether an API server is there at all; without one every
    // further request would only wait for its timeout.
    run(b, "cluster/nodes.yaml", &["get", "nodes", "-o", "yaml"]);
    if !b.manifest.files.iter().any(|f| f.name == "cluster/nodes.yaml") {
        b.missing("cluster state", "the API server did not answer `kubectl get nodes`; nothing more was asked");
        return;
    }
    for (name, what) in [
        ("cluster/pods.yaml", "pods"),
        ("cluster/events.yaml", "events"),
        ("cluster/helmcharts.yaml", "helmcharts.helm.cattle.io"),
        ("cluster/jobs.yaml", "jobs"),
    ] {
        run(b, name, &["get", what, "-A", "-o", "yaml"]);
    }
    let ns = crate::render::distribution::HELM_CHART_NAMESPACE;
    let a = argv(&["-n", ns, "get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    match b.host.run(&a) {
        Ok(o) if o.success() => {
            for job in o.stdout.split_whitespace().filter(|j| j.starts_with("helm-install-")) {
                let j = format!("job/{job}");
                run(b, &format!("cluster/logs/{job}.log"), &["-n", ns, "logs", &j, "--tail=2000"]);
            }
        }
        Ok(o) => b.missing(a.join(" "), format!("exited with status {}", o.status)),
        Err(e) => b.missing(a.join(" "), e.cause),
    }
    prometheus(b, inv, &run);
}

/// When the release has the monitoring component: Prometheus's active alerts and the
/// health of every scrape target, asked of its HTTP API through the API server's
/// service proxy (kubectl, so no port of the cluster needs to be reachable from here).
/// Not reachable (Prometheus not running yet, the proxy refused): named in the
/// manifest's `not_collected` with what kubectl said.
fn prometheus(b: &mut Bundle<'_>, inv: &Inventory, run: &dyn Fn(&mut Bundle<'_>, &str, &[&str])) {
    let charts = crate::ops::report::evidence::installed_charts(b.host, inv);
    let Some(prom) = charts.iter().find(|c| c.name == crate::render::platform::monitoring::PROMETHEUS_CHART) else {
        return;
    };
    for (name, api) in PROMETHEUS_QUERIES {
        let path = prometheus_proxy_path(&prom.namespace, &prom.name, api);
        run(b, name, &["get", "--raw", &path]);
    }
}

/// What the support bundle asks Prometheus: bundle name, API path.
pub const PROMETHEUS_QUERIES: [(&str, &str); 2] = [
    ("monitoring/prometheus-alerts.json", "/api/v1/alerts"),
    ("monitoring/prometheus-targets.json", "/api/v1/targets?state=active"),
];

/// The API server's proxy path to `api` of the prometheus chart's server Service
/// (`<release>-server`, port 80) in `namespace`.
pub fn prometheus_proxy_path(namespace: &str, release: &str, api: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/services/{release}-server:80/proxy{api}")
}

/// Writes MANIFEST.json then every entry into a tar (gzip, or zstd by extension),
/// 0600 from creation, through a temp file renamed over `out`.
// The archive goes to the operator's `-o` path on the machine running airlock, not
// below the target root, so it is written here rather than through the host.
#[allow(clippy::disallowed_methods)]
fn write_archive(out: &Path, manifest: &SupportManifest, entries: &[(String, Vec<u8>)]) -> Result<u64> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err(Error::input(out.display().to_string(), "is not a file name")
            .with_hint("pass -o FILE, e.g. -o support-$(hostname).tar.gz"));
    }
    let tmp = dir.join(format!(".{name}.partial"));
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .at(&tmp)?;
    // An earlier partial file may have had looser bits: 0600 whatever was there.
    file.set_permissions(fs::Permissions::from_mode(0o600)).at(&tmp)?;
    let zstd = name.ends_with(".zst") || name.ends_with(".tzst");
    let result = (|| -> std::io::Result<()> {
        // The entries are in memory already (each bounded), so the tar is too; the
        // compressors are finished explicitly so a write error is not lost on drop.
        let mut tar = tar::Builder::new(Vec::new());
        let mut manifest_json = serde_json::to_vec_pretty(manifest).expect("the manifest serialises");
        manifest_json.push(b'\n');
        for (name, data) in std::iter::once(("MANIFEST.json", manifest_json.as_slice()))
            .chain(entries.iter().map(|(n, d)| (n.as_str(), d.as_slice())))
        {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(unix_now());
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, data)?;
        }
        let tar = tar.into_inner()?;
        let mut w = std::io::BufWriter::new(&file);
        if zstd {
            let mut z = zstd::Encoder::new(&mut w, 3)?;
            z.write_all(&tar)?;
            z.finish()?;
        } else {
            let mut g = flate2::write::GzEncoder::new(&mut w, flate2::Compression::default());
            g.write_all(&tar)?;
            g.finish()?;
        }
        w.flush()?;
        drop(w);
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(out, e).with_hint("free space or choose another place for -o, then run it again"));
    }
    fs::rename(&tmp, out).at(out)?;
    let size = fs::metadata(out).at(out)?.len();
    Ok(size)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
// Tests lay out fixtures and hostile roots with std::fs and run real tools.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;
    use crate::host::{CommandOutput, Perms, RecordingHost};
    use airlock_format::report::Silent;
    use std::io::Read;

    const TOKEN: &str = "5f0c2b9d8e7a6f5e4d3c2b1a09f8e7d6";

    fn node(host: &RecordingHost) {
        let w = |p: &str, c: &str, mode: u32| {
            host.write_file(Path::new(p), &mut c.as_bytes(), Perms::mode(mode)).unwrap();
        };
        w("/var/lib/airlock/secrets/cluster-token", TOKEN, 0o600);
        w("/etc/rancher/k3s/config.yaml", &format!("token: {TOKEN}\nnode-name: n1\n"), 0o600);
        let inv = Inventory {
            version: 1,
            distribution: "k3s".into(),
            unit: "k3s.service".into(),
            killall: None,
            files: vec![],
            links: vec![],
            link_targets: Default::default(),
            dirs: vec![],
            units: vec!["k3s.service".into()],
            runtime_dirs: vec![PathBuf::from("/var/lib/rancher/k3s")],
        };
        host.write_file(Path::new(state::INVENTORY_PATH), &mut inv.to_json().as_slice(), Perms::mode(0o644)).unwrap();
    }

    fn archive(path: &Path) -> BTreeMap<String, String> {
        let gz = flate2::read::GzDecoder::new(fs::File::open(path).unwrap());
        let mut out = BTreeMap::new();
        for e in tar::Archive::new(gz).entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            out.insert(name, s);
        }
        out
    }

    #[test]
    fn a_live_site_without_an_api_server_still_yields_a_bundle_with_its_redacted_service_log() {
        let host = RecordingHost::new(true).unwrap();
        node(&host);
        let log =
            format!("k3s[1]: starting with K3S_TOKEN={TOKEN}\nk3s[1]: dial tcp 127.0.0.1:6443: connection refused\n");
        host.expect_command(&["journalctl", "-u", "k3s.service"], CommandOutput::ok(log));
        host.expect_command(
            &["/usr/local/bin/kubectl"],
            CommandOutput::exit(1, "The connection to the server 127.0.0.1:6443 was refused"),
        );
        host.expect_command(&["systemctl", "is-active"], CommandOutput::exit(3, "failed"));
        let out = tempfile::tempdir().unwrap();
        let r = collect(&host, &SupportOptions::new(out.path().join("s.tar.gz")), &Silent).unwrap();
        let files = archive(&r.output);
        assert!(files["logs/k3s.service.log"].contains("connection refused"), "{files:?}");
        for (name, text) in &files {
            assert!(!text.contains(TOKEN), "the token leaked into {name}");
        }
        assert!(r.manifest.not_collected.iter().any(|m| m.reason.contains("did not answer `kubectl get nodes`")));
        // Nothing more was asked of a dead API server than whether it is there.
        let asked = host
            .calls()
            .iter()
            .filter(|c| matches!(c, crate::host::HostCall::Run { argv } if argv[0].ends_with("kubectl")))
            .count();
        assert_eq!(asked, 2, "status asks get nodes once, the bundle once");
        let mode = fs::metadata(&r.output).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn links_in_a_target_root_are_not_followed_out_of_it() {
        let host = RecordingHost::new(false).unwrap();
        node(&host);
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("host-only.conf"), "password: of-the-machine-running-airlock\n").unwrap();
        // /etc/airlock is a link to a directory outside the root, and a link inside
        // /etc/rancher points at a file outside it.
        let root = host.root().to_path_buf();
        std::os::unix::fs::symlink(outside.path(), root.join("etc/airlock")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("host-only.conf"), root.join("etc/rancher/k3s/extra.yaml"))
            .unwrap();
        let out = tempfile::tempdir().unwrap();
        let r = collect(&host, &SupportOptions::new(out.path().join("s.tar.gz")), &Silent).unwrap();
        let names: Vec<&str> = r.manifest.files.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"files/etc/rancher/k3s/config.yaml"), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("host-only") || n.contains("extra.yaml")), "{names:?}");
        let skipped: Vec<String> =
            r.manifest.not_collected.iter().map(|m| format!("{}: {}", m.source, m.reason)).collect();
        assert!(skipped.contains(&"/etc/airlock: a component of the path is a symbolic link (not followed)".into()));
        assert!(skipped.contains(&"/etc/rancher/k3s/extra.yaml: symbolic link (not followed)".into()), "{skipped:?}");
    }

    #[test]
    fn cluster_state_is_collected_redacted_and_cut_at_its_limit() {
        let host = RecordingHost::new(true).unwrap();
        node(&host);
        host.expect_command(&["journalctl"], CommandOutput::ok("quiet\n"));
        host.expect_command(&["systemctl", "is-active"], CommandOutput::ok("active\n"));
        host.expect_command(&["/usr/local/bin/kubectl"], CommandOutput::ok(format!("items: []\n# {TOKEN}\n")));
        let events = format!("message: {}\n", "x".repeat(5000));
        host.expect_command(
            &[
                "/usr/local/bin/kubectl",
                "--kubeconfig",
                "/etc/rancher/k3s/k3s.yaml",
                "--request-timeout=20s",
                "get",
                "events",
            ],
            CommandOutput::ok(events),
        );
        host.expect_command(
            &[
                "/usr/local/bin/kubectl",
                "--kubeconfig",
                "/etc/rancher/k3s/k3s.yaml",
                "--request-timeout=20s",
                "-n",
                "kube-system",
                "get",
                "jobs",
            ],
            CommandOutput::ok("helm-install-hello other"),
        );
        let out = tempfile::tempdir().unwrap();
        let mut opts = SupportOptions::new(out.path().join("s.tar.zst"));
        opts.max_command_bytes = 1000;
        let r = collect(&host, &opts, &Silent).unwrap();
        let names: Vec<&str> = r.manifest.files.iter().map(|f| f.name.as_str()).collect();
        for want in [
            "cluster/nodes.yaml",
            "cluster/pods.yaml",
            "cluster/helmcharts.yaml",
            "cluster/logs/helm-install-hello.log",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("other")));
        let events = r.manifest.files.iter().find(|f| f.name == "cluster/events.yaml").unwrap();
        assert!(events.truncated && events.size < 1100, "{events:?}");
        assert!(
            r.manifest.files.iter().find(|f| f.name == "cluster/nodes.yaml").unwrap().redactions
                [redact::RULE_GENERATED]
                == 1
        );
        let z = zstd::decode_all(fs::File::open(&r.output).unwrap()).unwrap();
        assert!(!String::from_utf8_lossy(&z).contains(TOKEN));
    }

    #[test]
    fn a_prometheus_that_does_not_answer_is_named_among_what_was_not_collected() {
        let host = RecordingHost::new(true).unwrap();
        node(&host);
        // The release has the monitoring component: its HelmChart is in the inventory.
        let chart = "kind: HelmChart\nmetadata:\n  name: prometheus\nspec:\n  targetNamespace: monitoring\n";
        let path = "/var/lib/rancher/k3s/server/manifests/airlock-prometheus.yaml";
        host.write_file(Path::new(path), &mut chart.as_bytes(), Perms::mode(0o600)).unwrap();
        let mut layout = crate::engine::layout::Layout::default();
        layout.file(path, 0o600, chart.as_bytes().to_vec());
        let key = crate::state::InventoryKey::load_or_generate(&host).unwrap();
        let inv = Inventory::of(&layout, "k3s", "k3s.service", None, vec![], &key, &|_| None);
        host.write_file(Path::new(state::INVENTORY_PATH), &mut inv.to_json().as_slice(), Perms::mode(0o644)).unwrap();
        host.expect_command(&["journalctl"], CommandOutput::ok(""));
        host.expect_command(&["/usr/local/bin/kubectl"], CommandOutput::ok("items: []\n"));
        let k = ["/usr/local/bin/kubectl", "--kubeconfig", "/etc/rancher/k3s/k3s.yaml", "--request-timeout=20s"];
        let raw: Vec<&str> = k.iter().copied().chain(["get", "--raw"]).collect();
        host.expect_command(
            &raw,
            CommandOutput::exit(
                1,
                "Error from server (ServiceUnavailable): no endpoints available for service \"prometheus-server:80\"",
            ),
        );
        let out = tempfile::tempdir().unwrap();
        let r = collect(&host, &SupportOptions::new(out.path().join("s.tar.gz")), &Silent).unwrap();
        let missing: Vec<&Missing> = r
            .manifest
            .not_collected
            .iter()
            .filter(|m| m.source.contains("/services/prometheus-server:80/proxy/api/v1/"))
            .collect();
        assert_eq!(missing.len(), 2, "{:#?}", r.manifest.not_collected);
        assert!(missing.iter().all(|m| m.reason.contains("no endpoints available")), "{missing:#?}");
        assert!(
            missing[0].source.ends_with("/proxy/api/v1/alerts")
                && missing[1].source.ends_with("/proxy/api/v1/targets?state=active")
        );
        assert!(!r.manifest.files.iter().any(|f| f.name.starts_with("monitoring/")));
    }
}
