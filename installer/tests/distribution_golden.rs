//! Golden files of the distribution layouts: what `airlock` lays down for K3s (single
//! server, first HA server, joining HA server, agent) and for an RKE2 CIS server.
//!
//! Each case renders a [`Layout`] and compares its text form with
//! `tests/golden/<case>/layout.txt`: every user, directory, file, link and unit with
//! its mode and source, then the content of every inline file. Secret values (the
//! token) are replaced by `<redacted>`, and each case asserts the token appears nowhere
//! in the golden text. `AIRLOCK_UPDATE_GOLDEN=1` rewrites the files; otherwise a
//! difference fails with a line diff.
//!
//! The inputs are stand-ins: the K3s binary, the image tarballs and the RKE2 tarball
//! are only staged entry names here; the `notes` chart is the real demo chart, and the
//! "big" chart is stand-in bytes over the inline limit.

// Tests lay out fixtures and hostile roots with std::fs and run real tools.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use airlock_installer::engine::layout::{FileSource, Layout};
use airlock_installer::render::distribution::{
    render, Artifacts, ChartInput, DistributionInput, PushedImages, RegistryMirror, Role, TarballEntry,
    TarballEntryKind, Token, CHART_CONTENT_LIMIT,
};

/// The cluster token of every case; it must never reach a golden file.
const TOKEN: &str = "K10-golden-token::server:s3cr3t-7f3a9c";
/// Top-level keys of secret YAML files whose values are redacted.
const SECRET_KEYS: &[&str] = &["token", "agent-token"];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real demo chart (525 bytes): inlined as `chartContent`.
fn notes_chart() -> ChartInput {
    let tgz = fs::read(manifest_dir().join("../examples/demo/charts/notes-0.1.0.tgz")).expect("demo chart");
    assert!(tgz.len() <= CHART_CONTENT_LIMIT);
    ChartInput {
        name: "notes".into(),
        version: "0.1.0".into(),
        namespace: "demo".into(),
        entry: "charts/notes-0.1.0.tgz".into(),
        tgz,
        values_yaml: "title: Release notes\nitems:\n  - offline install\n".into(),
        values_secret: false,
    }
}

/// A stand-in for a chart over the inline limit: served from `server/static/charts/`.
fn big_chart() -> ChartInput {
    let mut tgz = vec![0x1f, 0x8b];
    tgz.resize(CHART_CONTENT_LIMIT + 1, 0);
    ChartInput {
        name: "minio".into(),
        version: "5.4.0".into(),
        namespace: "minio".into(),
        entry: "charts/minio-5.4.0.tgz".into(),
        tgz,
        values_yaml: "mode: standalone\nreplicas: 1\npersistence:\n  size: 20Gi\n".into(),
        values_secret: false,
    }
}

fn mirror() -> RegistryMirror {
    RegistryMirror {
        endpoint: "registry.example:5000".into(),
        ca_file: "/etc/airlock/pki/ca.crt".into(),
        registries: vec!["docker.io".into(), "quay.io".into()],
        auth: None,
        pushed: None,
    }
}

fn k3s_input(role: Role) -> DistributionInput {
    DistributionInput {
        version: "v1.31.4+k3s1".into(),
        role,
        node_name: "node-1".into(),
        node_ip: vec!["10.0.0.11".parse().unwrap()],
        tls_san: vec!["api.example.internal".into(), "10.0.0.10".into()],
        token: Token::new(TOKEN),
        cluster_cidr: vec!["10.42.0.0/16".parse().unwrap()],
        service_cidr: vec!["10.43.0.0/16".parse().unwrap()],
        cluster_dns: Some("10.43.0.10".parse().unwrap()),
        disable: vec!["traefik".into(), "servicelb".into()],
        embedded_registry: false,
        secrets_encryption: false,
        cis: false,
        kube_apiserver_args: vec![],
        data_dir: None,
        registry_mirror: None,
        artifacts: Artifacts::K3s {
            binary: "distribution/k3s".into(),
            images: vec!["distribution/k3s-airgap-images-amd64.tar.zst".into()],
        },
        image_archive_entry: "images/airlock-images.tar".into(),
        charts: vec![notes_chart(), big_chart()],
        proxy_env: vec![],
        rke2_opt_prefix: None,
    }
}

/// The entries of a stand-in `rke2.linux-amd64.tar.gz`, as `read_unpacked_rke2` lists
/// them (the real tarball has the same names).
fn rke2_tarball() -> Vec<TarballEntry> {
    let dir = |p: &str| TarballEntry { path: p.into(), kind: TarballEntryKind::Dir };
    let file = |p: &str, executable: bool| TarballEntry { path: p.into(), kind: TarballEntryKind::File { executable } };
    vec![
        dir("bin"),
        file("bin/rke2", true),
        file("bin/rke2-killall.sh", true),
        file("bin/rke2-uninstall.sh", true),
        dir("lib"),
        dir("lib/systemd"),
        dir("lib/systemd/system"),
        file("lib/systemd/system/rke2-agent.env", false),
        file("lib/systemd/system/rke2-agent.service", false),
        file("lib/systemd/system/rke2-server.env", false),
        file("lib/systemd/system/rke2-server.service", false),
        dir("share"),
        dir("share/rke2"),
        file("share/rke2/LICENSE.txt", false),
        file("share/rke2/rke2-cis-sysctl.conf", false),
    ]
}

fn cases() -> Vec<(&'static str, DistributionInput)> {
    let single = k3s_input(Role::SingleServer);

    let mut first = k3s_input(Role::FirstServer);
    first.embedded_registry = true;
    first.registry_mirror = Some(mirror());
    first.charts = vec![notes_chart()];

    let mut join = k3s_input(Role::JoinServer { server: "10.0.0.11".into() });
    join.node_name = "node-2".into();
    join.node_ip = vec!["10.0.0.12".parse().unwrap()];
    join.embedded_registry = true;
    join.registry_mirror = Some(mirror());
    join.charts = vec![notes_chart()];

    let mut agent = k3s_input(Role::Agent { server: "k3s.example.internal".into() });
    agent.node_name = "worker-1".into();
    agent.node_ip = vec!["10.0.0.21".parse().unwrap()];
    agent.embedded_registry = true;
    agent.registry_mirror = Some(mirror());
    agent.data_dir = Some("/srv/k3s".into());

    let mut rke2 = k3s_input(Role::FirstServer);
    rke2.version = "v1.31.4+rke2r1".into();
    rke2.cis = true;
    rke2.kube_apiserver_args = vec!["service-account-extend-token-expiration=false".into()];
    rke2.disable = vec!["rke2-ingress-nginx".into()];
    rke2.registry_mirror = Some(mirror());
    rke2.artifacts = Artifacts::Rke2 {
        tarball: rke2_tarball(),
        images: vec![
            "distribution/rke2-images-core.linux-amd64.tar.zst".into(),
            "distribution/rke2-images-canal.linux-amd64.tar.zst".into(),
        ],
    };

    // The bundle's images pushed into the site registry (`registry.delivery: registry`):
    // rewrites to the pushed paths, and no image archive in the images directory.
    let mut site = k3s_input(Role::SingleServer);
    site.registry_mirror = Some(RegistryMirror {
        registries: vec!["docker.io".into(), "quay.io".into(), "vendor.example:5000".into()],
        pushed: Some(PushedImages { prefix: "platform".into(), archive_too: false }),
        ..mirror()
    });

    vec![
        ("k3s-single-server", single),
        ("k3s-site-registry", site),
        ("k3s-ha-first-server", first),
        ("k3s-ha-join-server", join),
        ("k3s-agent", agent),
        ("rke2-cis-server", rke2),
    ]
}

/// Redacts the values of [`SECRET_KEYS`] in a secret file.
fn redact(content: &str) -> String {
    content
        .lines()
        .map(|line| match line.split_once(':') {
            Some((key, _)) if SECRET_KEYS.contains(&key) => format!("{key}: <redacted>"),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The golden text form of a layout.
fn golden_text(case: &str, layout: &Layout) -> String {
    let mut s = format!(
        "# Golden layout `{case}`, checked by installer/tests/distribution_golden.rs.\n\
         # Rewrite with: AIRLOCK_UPDATE_GOLDEN=1 cargo test -p airlock-installer --test distribution_golden\n\n"
    );
    s.push_str("users:\n");
    for u in &layout.users {
        s.push_str(&format!("  {} home={} shell={}\n", u.name, u.home.display(), u.shell.display()));
    }
    s.push_str("dirs:\n");
    for d in &layout.dirs {
        s.push_str(&format!("  {:04o} {}\n", d.mode, d.path.display()));
    }
    s.push_str("files:\n");
    for f in &layout.files {
        let source = match &f.source {
            FileSource::Staged(entry) => format!("<- staged {entry}"),
            FileSource::Inline(bytes) => format!("inline, {} bytes", bytes.len()),
        };
        let secret = if f.secret { ", secret" } else { "" };
        s.push_str(&format!("  {:04o} {}  {source}{secret}\n", f.mode, f.path.display()));
    }
    s.push_str("links:\n");
    for l in &layout.links {
        s.push_str(&format!("  {} -> {}\n", l.link.display(), l.target.display()));
    }
    s.push_str("units:\n");
    for u in &layout.units {
        s.push_str(&format!("  {u}\n"));
    }
    for f in &layout.files {
        let FileSource::Inline(bytes) = &f.source else { continue };
        let text = String::from_utf8(bytes.clone()).expect("inline files are text");
        let (note, body) = if f.secret { (", secret: values redacted", redact(&text)) } else { ("", text) };
        s.push_str(&format!("\n==> {} ({:04o}{note}) <==\n", f.path.display(), f.mode));
        s.push_str(body.trim_end_matches('\n'));
        s.push('\n');
    }
    s
}

/// A line diff (longest common subsequence): `-` lines of the golden file, `+` lines
/// of the rendered text, each with its line number in its own file; unchanged lines
/// are left out.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    let short = |l: &str| if l.len() > 160 { format!("{}…", &l[..160]) } else { l.to_string() };
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("{:>5} - {}\n", i + 1, short(a[i])));
            i += 1;
        } else {
            out.push_str(&format!("{:>5} + {}\n", j + 1, short(b[j])));
            j += 1;
        }
    }
    out
}

fn check_golden(case: &str, actual: &str) {
    let path = manifest_dir().join("tests/golden").join(case).join("layout.txt");
    if std::env::var("AIRLOCK_UPDATE_GOLDEN").as_deref() == Ok("1") {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        eprintln!("rewrote {}", path.display());
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; create it with AIRLOCK_UPDATE_GOLDEN=1 (and review the result)", path.display())
    });
    if expected != actual {
        panic!(
            "layout of `{case}` differs from {} (- golden, + rendered):\n{}\n\
             If the change is intended, rewrite with AIRLOCK_UPDATE_GOLDEN=1 and review the diff.",
            path.display(),
            diff(&expected, actual)
        );
    }
}

#[test]
fn golden_layouts() {
    for (case, input) in cases() {
        let layout = render(&input).unwrap_or_else(|e| panic!("{case}: {e}"));
        let text = golden_text(case, &layout);
        assert!(!text.contains(TOKEN), "{case}: the token leaked into the golden text");
        // The redaction hid something real: the config file does carry the token.
        let config = layout.files.iter().find(|f| f.path.ends_with("config.yaml")).expect("config.yaml");
        assert!(config.secret && config.mode == 0o600, "{case}: config.yaml must be a 0600 secret file");
        let FileSource::Inline(bytes) = &config.source else { panic!("config.yaml is inline") };
        assert!(String::from_utf8_lossy(bytes).contains(&format!("token: {TOKEN}")), "{case}: token missing");
        check_golden(case, &text);
    }
}

/// Properties every layout has, whatever the golden files say.
#[test]
fn layout_invariants() {
    for (case, input) in cases() {
        let layout = render(&input).unwrap();
        // No path is planned twice.
        let mut paths = BTreeSet::new();
        for p in layout
            .dirs
            .iter()
            .map(|d| &d.path)
            .chain(layout.files.iter().map(|f| &f.path))
            .chain(layout.links.iter().map(|l| &l.link))
        {
            assert!(paths.insert(p.clone()), "{case}: {} planned twice", p.display());
            assert!(p.is_absolute(), "{case}: {} is not absolute", p.display());
        }
        // Directories come parents first.
        for (i, d) in layout.dirs.iter().enumerate() {
            for later in &layout.dirs[i + 1..] {
                assert!(!d.path.starts_with(&later.path), "{case}: {} before its parent", d.path.display());
            }
        }
        // The token is only in secret files.
        for f in &layout.files {
            if let FileSource::Inline(bytes) = &f.source {
                if String::from_utf8_lossy(bytes).contains(TOKEN) {
                    assert!(f.secret, "{case}: {} holds the token but is not secret", f.path.display());
                }
            }
        }
        // Images: dotfile-free names the images dir imports; manifests only on servers.
        let data = input.data_dir();
        for f in &layout.files {
            if f.path.starts_with(data.join("agent/images")) {
                let name = f.path.file_name().unwrap().to_string_lossy();
                assert!(airlock_installer::render::distribution::is_image_tarball_name(&name), "{case}: {name}");
            }
            if f.path.starts_with(data.join("server")) {
                assert!(input.role.is_server(), "{case}: {} on an agent", f.path.display());
            }
        }
        assert_eq!(layout.units, vec![input.unit().to_string()], "{case}");
    }
}

/// The teardown scripts have the names K3s' `install.sh` gives them (and its docs tell
/// operators to run): `k3s-killall.sh`, and `k3s-uninstall.sh` on servers but
/// `k3s-agent-uninstall.sh` on agents. The uninstall script works from the install's
/// record (the inventory as a list), not from a copy of this layout.
#[test]
fn distribution_k3s_teardown_scripts_have_k3s_own_names_per_role() {
    for (case, input) in cases().into_iter().filter(|(c, _)| c.starts_with("k3s")) {
        let layout = render(&input).unwrap();
        let names: BTreeSet<String> = layout
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .filter(|p| p.starts_with("/usr/local/bin/") && p.ends_with(".sh"))
            .collect();
        let uninstall = if input.role.is_server() {
            "/usr/local/bin/k3s-uninstall.sh"
        } else {
            "/usr/local/bin/k3s-agent-uninstall.sh"
        };
        let want: BTreeSet<String> =
            ["/usr/local/bin/k3s-killall.sh", uninstall].iter().map(|s| s.to_string()).collect();
        assert_eq!(names, want, "{case}");
        let script = layout.files.iter().find(|f| f.path == Path::new(uninstall)).unwrap();
        let FileSource::Inline(bytes) = &script.source else { panic!() };
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("list='/var/lib/airlock/uninstall.list'"), "{case}");
        assert!(!text.contains("/etc/rancher/k3s/config.yaml'"), "{case}: no copy of the layout's paths");
    }
}
