//! `airlock install` with a site registry (`registry.delivery: registry`), into a target
//! root, against a real `docker-registry` with TLS and htpasswd. What is pinned:
//! - the install pushes every image of the verified bundle under the documented mapping,
//!   at the signed digests (`skopeo inspect`), and lays no image archive on the node;
//! - the `registries.yaml` it writes sends every upstream of the bundle to the site
//!   registry only, with a rewrite that takes each bundled image to where it was pushed
//!   (the rule applied as K3s documents it: a regular expression on the repository path);
//! - a real containerd pulls every bundled image by its upstream name through the
//!   `hosts.toml` K3s generates from that file (see [`hosts_toml`]) and gets the signed
//!   digest;
//! - a second install finds every image there and sends no blob; an upgrade pushes what
//!   the new release adds, with the answers the site kept.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use airlock_format::parts::BundleFiles;
use airlock_format::read::read_manifest;
use airlock_tests::registry::{Registry, RegistryOptions};
use airlock_tests::{airlock_with_answers, build_demo_bundle, build_demo_variant, demo_dir, require_tool, Containerd};
use serde_yaml::Value;

const USER: &str = "site-puller";
const PASSWORD: &str = "s1te-registry-pw";
/// Where the answers say the registry's CA is on the node.
const CA_ON_NODE: &str = "/etc/pki/site-registry-ca.pem";

fn answers(dir: &Path, reg: &Registry) -> PathBuf {
    let mut text = fs::read_to_string(demo_dir().join("answers.yaml")).unwrap();
    text.push_str(&format!(
        "registry:\n  mirror: {host}\n  ca_file: {CA_ON_NODE}\n  username: {USER}\n  password: {PASSWORD}\n  \
         delivery: registry\n  prefix: site\n",
        host = reg.host()
    ));
    let path = dir.join("answers.yaml");
    fs::write(&path, text).unwrap();
    path
}

/// The `hosts.toml` K3s writes for one upstream from its `registries.yaml` entry (K3s'
/// `HostsTomlTemplate`: one `[host."<endpoint>"]` per endpoint with `capabilities =
/// ["pull", "resolve"]` and `ca` from `configs.<host:port>.tls.ca_file`; no `server`
/// line, since `disable-default-registry-endpoint` drops the default endpoint).
///
/// K3s ships a containerd with `rewrite` tables in `hosts.toml`; the containerd here is
/// upstream's, which has none. The rules Airlock writes are one catch-all per upstream,
/// `"^(.*)$" = "<root>/$1"`: every repository path `P` becomes `<root>/P`, which is
/// exactly the same request URL (`/v2/<root>/P/manifests/...`) as upstream containerd's
/// `override_path` on the endpoint `https://<registry>/v2/<root>`. The test asserts
/// that shape before it relies on it.
fn hosts_toml(endpoint: &str, rewrite: &BTreeMap<String, String>, ca: &Path) -> String {
    assert_eq!(rewrite.len(), 1, "one rule per upstream: {rewrite:?}");
    let root = rewrite["^(.*)$"].strip_suffix("/$1").expect("a catch-all rule");
    format!(
        "[host.\"{endpoint}/v2/{root}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n  override_path = true\n",
        ca.display()
    )
}

/// `docker.io/airlock-demo/api:1.0.0` → (`docker.io`, `airlock-demo/api`, `1.0.0`).
fn split(reference: &str) -> (&str, &str, &str) {
    let (host, rest) = reference.split_once('/').unwrap();
    let (path, tag) = rest.rsplit_once(':').unwrap();
    (host, path, tag)
}

#[test]
fn install_pushes_the_bundle_into_the_site_registry_and_containerd_pulls_every_image_through_the_rewrites() {
    if require_tool("skopeo").is_none() {
        return;
    }
    let Some(reg) = Registry::start(RegistryOptions::site(USER, PASSWORD)) else { return };
    let t = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(t.path(), &[]);
    let m = read_manifest(&BundleFiles::locate(&bundle).unwrap(), None).unwrap().0;
    let root = t.path().join("root");
    let ca_on_node = root.join(CA_ON_NODE.trim_start_matches('/'));
    fs::create_dir_all(ca_on_node.parent().unwrap()).unwrap();
    fs::copy(reg.ca_file().unwrap(), &ca_on_node).unwrap();
    let answers = answers(t.path(), &reg);

    let out = airlock_with_answers("install", &bundle, &answers, &root, &["--yes"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "install failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD), "the password was printed");

    // Pushed under the mapping, at the signed digests.
    reg.assert_pushed("site", &m.images);
    // The node pulls them: no archive in its images directory.
    let images_dir = root.join("var/lib/rancher/k3s/agent/images");
    assert!(images_dir.is_dir());
    assert!(!images_dir.join("airlock-images.tar").exists(), "an image archive was laid out");

    // registries.yaml: every upstream to the site registry only, rewritten.
    let yaml = root.join("etc/rancher/k3s/registries.yaml");
    let text = fs::read_to_string(&yaml).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    let endpoint = format!("https://{}", reg.host());
    let config = &doc["configs"][reg.host().as_str()];
    assert_eq!(config["tls"]["ca_file"].as_str(), Some(CA_ON_NODE));
    assert_eq!(config["auth"]["username"].as_str(), Some(USER));
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&yaml).unwrap().permissions().mode() & 0o777, 0o600, "it holds the password");
    }
    let config_yaml = fs::read_to_string(root.join("etc/rancher/k3s/config.yaml")).unwrap();
    assert!(config_yaml.contains("disable-default-registry-endpoint: true"), "fallback to public endpoints");

    let hosts = t.path().join("certs.d");
    for i in &m.images {
        let (upstream, path, tag) = split(&i.reference);
        let mirror = &doc["mirrors"][upstream];
        let endpoints: Vec<&str> =
            mirror["endpoint"].as_sequence().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        assert_eq!(endpoints, [endpoint.as_str()], "{upstream}: the site registry and nothing else");
        let rewrite: BTreeMap<String, String> = serde_yaml::from_value(mirror["rewrite"].clone()).unwrap();
        // K3s' rule: the first pattern that matches the repository path replaces it.
        let (pattern, replacement) =
            rewrite.iter().find(|(p, _)| regex::Regex::new(p).unwrap().is_match(path)).unwrap();
        let rewritten = regex::Regex::new(pattern).unwrap().replace(path, replacement.as_str()).into_owned();
        assert_eq!(format!("{rewritten}:{tag}"), format!("site/{}", i.reference), "{} resolves elsewhere", i.reference);
        let dir = hosts.join(upstream);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("hosts.toml"), hosts_toml(&endpoint, &rewrite, &ca_on_node)).unwrap();
    }

    // A real containerd pulls every image by its upstream name through those hosts.
    if let Some(cd) = Containerd::start() {
        cd.new_namespace();
        for i in &m.images {
            let o = cd.ctr(&[
                "images".as_ref(),
                "pull".as_ref(),
                "--all-platforms".as_ref(),
                "--hosts-dir".as_ref(),
                hosts.as_os_str(),
                "--user".as_ref(),
                format!("{USER}:{PASSWORD}").as_ref(),
                i.reference.as_ref(),
            ] as &[&std::ffi::OsStr]);
            assert!(
                o.status.success(),
                "ctr pull {}: {}{}",
                i.reference,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let ls = cd.ctr(&["images", "ls"]);
            let ls = String::from_utf8_lossy(&ls.stdout);
            let line = ls.lines().find(|l| l.starts_with(&format!("{} ", i.reference))).unwrap();
            assert!(line.contains(&i.digest.to_string()), "{}: {line}", i.reference);
        }
    }

    // A second install finds every image there and sends nothing.
    let before = reg.uploads();
    let again = airlock_with_answers("install", &bundle, &answers, &root, &["--yes"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(reg.uploads(), before, "the second install uploaded blobs");

    // An upgrade pushes what the new release adds (here a new tag of an image whose
    // blobs are all there: the manifest goes up, no blob does), with the kept answers.
    let spec = fs::read_to_string(demo_dir().join("bundle.yaml")).unwrap();
    let v2 = spec.replace("version: 1.0.0\n", "version: 1.1.0\n").replace(
        "        from: oci:images/layout:docker.io/library/postgres:16.6\n",
        "        from: oci:images/layout:docker.io/library/postgres:16.6\n      \
         - ref: docker.io/airlock-demo/api:1.1.0\n        from: oci:images/layout:docker.io/airlock-demo/api:1.0.0\n",
    );
    assert_ne!(v2, spec);
    let v2_dir = t.path().join("v2");
    fs::create_dir_all(&v2_dir).unwrap();
    let v2 = build_demo_variant(&v2, &v2_dir, &[]);
    let o = std::process::Command::new(airlock_tests::cargo_bin("airlock"))
        .arg("upgrade")
        .arg(&v2)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--root")
        .arg(&root)
        .arg("--yes")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "upgrade failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let api = m.images.iter().find(|i| i.reference == "docker.io/airlock-demo/api:1.0.0").unwrap();
    assert_eq!(reg.skopeo_digest("site/docker.io/airlock-demo/api:1.1.0").unwrap(), api.digest.to_string());
    assert_eq!(reg.uploads(), before, "the upgrade uploaded blobs the registry had");
}
