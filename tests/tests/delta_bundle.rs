//! Delta bundles end to end: two versions of the embedded example where only the app
//! image's top layer changed, built by the real `airlock-bundler`, checked by the real
//! `airlock` and by stock minisign and sha256sum, and staged over the first version
//! through the installer's staging code.

use airlock_installer::state;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_format::digest::Sha256Digest;
use airlock_format::error::ErrorKind;
use airlock_format::manifest::{BaseRef, Entry, FileArtifact, Manifest, FORMAT_V1};
use airlock_format::minisign::{PublicKey, SecretKey};
use airlock_format::parts::BundleFiles;
use airlock_format::report::Silent;
use airlock_format::write::{write_bundle, Content, PlannedEntry, WriteOptions};
use airlock_installer::bundle::delta::{extract_delta, read_profiles_for_site};
use airlock_installer::bundle::staging::extract_with_image_archive;
use airlock_installer::ops::install::IMAGE_ARCHIVE_ENTRY;
use airlock_installer::state::RELEASES_DIR;
use airlock_tests::{cargo_bin, demo_dir, require_tool, workspace_root};
use serde_json::Value;

/// Size of the replaced top layer's payload: random bytes, so compression cannot
/// hide whether the delta carries more than that layer.
const PAYLOAD: usize = 2 << 20;
const API: &str = "docker.io/airlock-demo/api:1.0.0";

fn pubkey() -> PathBuf {
    demo_dir().join("keys/demo.pub")
}

fn keys() -> Vec<PublicKey> {
    vec![PublicKey::from_file(&pubkey()).unwrap()]
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("command runs")
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A private copy of the demo (with the chart and profiles its spec reaches with
/// `../../`), so the test can change its images and version.
struct Demo {
    _tmp: tempfile::TempDir,
    spec: PathBuf,
    layout: PathBuf,
    out: PathBuf,
}

impl Demo {
    fn new() -> Demo {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        copy_tree(&demo_dir(), &ws.join("examples/demo"));
        copy_tree(&workspace_root().join("assets/charts/airlock-app"), &ws.join("assets/charts/airlock-app"));
        copy_tree(&workspace_root().join("profiles"), &ws.join("profiles"));
        let out = tmp.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let demo = ws.join("examples/demo");
        Demo { spec: demo.join("bundle.yaml"), layout: demo.join("images/layout"), out, _tmp: tmp }
    }

    fn set_version(&self, version: &str) {
        let text = fs::read_to_string(&self.spec).unwrap();
        let changed = text.replace("\nversion: 1.0.0\n", &format!("\nversion: {version}\n"));
        assert_ne!(text, changed, "the demo spec has `version: 1.0.0`");
        fs::write(&self.spec, changed).unwrap();
    }

    /// `airlock-bundler create` of the spec as it is now into `out/NAME`.
    fn build(&self, name: &str, extra: &[&std::ffi::OsStr]) -> PathBuf {
        let out = self.out.join(name);
        ok(Command::new(cargo_bin("airlock-bundler"))
            .env("SOURCE_DATE_EPOCH", "1795305600")
            .arg("create")
            .arg(&self.spec)
            .arg("-o")
            .arg(&out)
            .arg("--key")
            .arg(demo_dir().join("keys/demo.key"))
            .args(extra));
        out
    }

    /// Replaces the top layer of the app's API image with a new one holding
    /// `PAYLOAD` random bytes (a new config and manifest follow, as a rebuilt image
    /// would have); every other blob stays. Returns the new layer's size.
    fn replace_api_top_layer(&self) -> u64 {
        let blob = |d: &str| self.layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
        let put = |bytes: &[u8]| -> (String, u64) {
            let d = Sha256Digest::of(bytes);
            fs::write(blob(&d.to_string()), bytes).unwrap();
            (d.to_string(), bytes.len() as u64)
        };
        let mut payload = vec![0u8; PAYLOAD];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in payload.iter_mut() {
            // xorshift: reproducible bytes that zstd cannot compress.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(payload.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, "usr/local/share/airlock-demo/api-data.bin", payload.as_slice()).unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let (layer, layer_size) = put(&gz);

        let index_path = self.layout.join("index.json");
        let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
        let desc = index["manifests"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == API)
            .expect("the demo layout has the API image");
        let mut manifest: Value =
            serde_json::from_slice(&fs::read(blob(desc["digest"].as_str().unwrap())).unwrap()).unwrap();
        let mut config: Value =
            serde_json::from_slice(&fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap()).unwrap();
        *config["rootfs"]["diff_ids"].as_array_mut().unwrap().last_mut().unwrap() =
            Value::String(Sha256Digest::of(&tar).to_string());
        let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
        manifest["config"]["digest"] = config_digest.into();
        manifest["config"]["size"] = config_size.into();
        let top = manifest["layers"].as_array_mut().unwrap().last_mut().unwrap();
        top["digest"] = layer.into();
        top["size"] = layer_size.into();
        let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
        desc["digest"] = manifest_digest.into();
        desc["size"] = manifest_size.into();
        fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        layer_size
    }
}

/// v1 full, v2 full and the v2 delta over v1, built from the same private demo.
struct Versions {
    demo: Demo,
    v1: PathBuf,
    v2: PathBuf,
    delta: PathBuf,
    layer_size: u64,
}

fn versions() -> Versions {
    let demo = Demo::new();
    let v1 = demo.build("v1.airlock", &[]);
    demo.set_version("1.1.0");
    let layer_size = demo.replace_api_top_layer();
    let v2 = demo.build("v2.airlock", &[]);
    let delta = demo.build("v2-delta.airlock", &["--base".as_ref(), v1.as_os_str()]);
    Versions { demo, v1, v2, delta, layer_size }
}

fn size(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

/// Every file under `dir`: relative path → (mode, sha256).
fn tree(dir: &Path) -> BTreeMap<String, (u32, Sha256Digest)> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let digest = if md.is_file() { Sha256Digest::of(&fs::read(e.path()).unwrap()) } else { Sha256Digest([0; 32]) };
        out.insert(rel, (md.permissions().mode() & 0o7777, digest));
    }
    out
}

/// Installs `bundle` as the site's release the way the upgrade contract keeps it:
/// its staged content under releases/<id>/bundle and release.json naming it.
/// Returns the release's content directory.
fn install_release(root: &Path, bundle: &Path) -> PathBuf {
    let files = BundleFiles::locate(bundle).unwrap();
    let scratch = root.join("scratch-stage");
    let staged = extract_with_image_archive(&files, &keys(), &scratch, IMAGE_ARCHIVE_ENTRY, &Silent).unwrap();
    let sha = staged.manifest.release_sha256();
    let id = format!("{}-{}", staged.manifest.version, &sha[..12]);
    let dir = root.join(RELEASES_DIR.trim_start_matches('/')).join(id).join("bundle");
    fs::create_dir_all(dir.parent().unwrap()).unwrap();
    fs::rename(&scratch, &dir).unwrap();
    write_release_json(root, &staged.manifest.name, &staged.manifest.version, &sha);
    dir
}

fn write_release_json(root: &Path, name: &str, version: &str, sha: &str) {
    let p = root.join(state::RELEASE_PATH.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let v = serde_json::json!({"bundle": name, "version": version, "manifest_sha256": sha, "profile": "single-node"});
    fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn staging_current(root: &Path) -> PathBuf {
    root.join("var/lib/airlock/staging/current")
}

#[test]
fn delta_is_at_most_the_changed_layer_plus_5_percent_and_stages_the_full_v2_tree() {
    let v = versions();
    let (full, delta) = (size(&v.v2), size(&v.delta));
    println!("changed layer: {} bytes; full v2 bundle: {full} bytes; delta bundle: {delta} bytes", v.layer_size);
    assert!(
        delta as f64 <= v.layer_size as f64 * 1.05,
        "the delta ({delta} bytes) is more than the changed layer ({} bytes) + 5%",
        v.layer_size
    );

    let root = tempfile::tempdir().unwrap();
    let base = install_release(root.path(), &v.v1);
    let via_delta = root.path().join("via-delta");
    let staged_delta = extract_delta(
        &BundleFiles::locate(&v.delta).unwrap(),
        &keys(),
        &via_delta,
        IMAGE_ARCHIVE_ENTRY,
        &base,
        &Silent,
    )
    .expect("the delta stages over v1");
    let via_full = root.path().join("via-full");
    let staged_full = extract_with_image_archive(
        &BundleFiles::locate(&v.v2).unwrap(),
        &keys(),
        &via_full,
        IMAGE_ARCHIVE_ENTRY,
        &Silent,
    )
    .unwrap();

    let (a, b) = (tree(&via_delta), tree(&via_full));
    assert!(a.contains_key(IMAGE_ARCHIVE_ENTRY), "the delta staged the image archive");
    assert_eq!(
        a.len(),
        b.len(),
        "same files: {:?} vs {:?}",
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>()
    );
    for (path, want) in &b {
        assert_eq!(a.get(path), Some(want), "{path} differs between the delta-staged and the full-staged v2");
    }
    // The same release, whichever way it came: release.json and the release id agree.
    assert_eq!(staged_delta.manifest, staged_full.manifest);
    assert_eq!(staged_delta.manifest.release_sha256(), staged_full.manifest.release_sha256());
}

#[test]
fn preflight_reads_a_deltas_profiles_from_the_installed_release() {
    let v = versions();
    let root = tempfile::tempdir().unwrap();
    let files = BundleFiles::locate(&v.delta).unwrap();
    let e = read_profiles_for_site(&files, &keys(), root.path(), &Silent).unwrap_err();
    assert!(e.to_string().contains("nothing is installed"), "{e}");

    let base = install_release(root.path(), &v.v1);
    let (m, profiles) = read_profiles_for_site(&files, &keys(), root.path(), &Silent).expect("profiles from v1");
    assert_eq!(m.version, "1.1.0");
    assert!(m.base.is_none(), "the full release's manifest");
    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["single-node", "ha"]);

    let profile = base.join("profiles/single-node.yaml");
    let mut text = fs::read_to_string(&profile).unwrap();
    text.push_str("# changed on the site\n");
    fs::write(&profile, text).unwrap();
    let e = read_profiles_for_site(&files, &keys(), root.path(), &Silent).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
    assert_eq!(e.subject, "profiles/single-node.yaml");
}

#[test]
fn a_flipped_byte_in_a_base_file_or_base_blob_is_caught_naming_the_entry() {
    let v = versions();
    let root = tempfile::tempdir().unwrap();
    let base = install_release(root.path(), &v.v1);
    let files = BundleFiles::locate(&v.delta).unwrap();

    let chart = base.join("charts/notes-0.1.0.tgz");
    let original = fs::read(&chart).unwrap();
    let mut flipped = original.clone();
    flipped[10] ^= 1;
    fs::write(&chart, &flipped).unwrap();
    let dir = root.path().join("stage");
    let e = extract_delta(&files, &keys(), &dir, IMAGE_ARCHIVE_ENTRY, &base, &Silent).unwrap_err();
    let text = e.to_string();
    assert_eq!(e.kind, ErrorKind::Corrupt, "{text}");
    assert_eq!(e.subject, "charts/notes-0.1.0.tgz", "{text}");
    assert!(text.contains(&chart.display().to_string()), "names the base path: {text}");
    assert!(text.contains("hint:"), "{text}");
    assert!(!dir.exists(), "staging is removed after a bad base file");
    fs::write(&chart, &original).unwrap();

    // A blob of an unchanged image inside the base's image archive.
    let delta = airlock_format::read::read_manifest(&files, Some(&keys())).unwrap().0;
    let blob = delta.base_entries.iter().find(|e| e.path.starts_with("oci/blobs/")).expect("a blob from the base");
    let archive = base.join(IMAGE_ARCHIVE_ENTRY);
    let mut bytes = fs::read(&archive).unwrap();
    let name = blob.path.trim_start_matches("oci/");
    let at = bytes.windows(name.len()).position(|w| w == name.as_bytes()).expect("the blob's header") + 512;
    bytes[at] ^= 1;
    fs::write(&archive, &bytes).unwrap();
    let e = extract_delta(&files, &keys(), &dir, IMAGE_ARCHIVE_ENTRY, &base, &Silent).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
    assert_eq!(e.subject, blob.path, "{e}");
    assert!(e.to_string().contains(&archive.display().to_string()), "{e}");
    assert!(!dir.exists(), "staging is removed after a bad base blob");
}

#[test]
fn airlock_verify_and_inspect_say_delta_and_stock_minisign_and_sha256sum_check_it() {
    let v = versions();
    let out = ok(Command::new(cargo_bin("airlock")).arg("verify").arg("--pubkey").arg(pubkey()).arg(&v.delta));
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("delta over airlock-demo 1.0.0 (manifest sha256 "), "{text}");
    assert!(text.contains("expected from the base, not checked here"), "{text}");
    assert!(text.contains("from base   chart keycloakx"), "{text}");
    assert!(text.contains(&format!("ok          image {API}")), "the changed image is checked: {text}");

    let out = ok(Command::new(cargo_bin("airlock"))
        .args(["verify", "--output", "json", "--pubkey"])
        .arg(pubkey())
        .arg(&v.delta));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["delta"]["base_name"], "airlock-demo");
    assert_eq!(report["delta"]["base_version"], "1.0.0");
    assert!(report["delta"]["entries_from_base"].as_u64().unwrap() > 10, "{report}");
    let v1 = airlock_format::read::read_manifest(&BundleFiles::locate(&v.v1).unwrap(), None).unwrap().0;
    assert_eq!(report["delta"]["base_manifest_sha256"], v1.release_sha256());

    let out = ok(Command::new(cargo_bin("airlock")).args(["inspect", "--output", "json"]).arg(&v.delta));
    let inspect: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspect["delta"]["base_version"], "1.0.0");
    // The whole release is described, with sizes of what the base holds too.
    let charts = inspect["charts"].as_array().unwrap();
    assert!(charts.iter().all(|c| c["size"].as_u64().unwrap() > 0), "{inspect}");

    let Some(minisign) = require_tool("minisign") else { return };
    let Some(sha256sum) = require_tool("sha256sum") else { return };
    ok(Command::new(minisign).current_dir(&v.demo.out).args(["-Vm", "v2-delta.airlock.sha256", "-p"]).arg(pubkey()));
    ok(Command::new(sha256sum).current_dir(&v.demo.out).args(["-c", "v2-delta.airlock.sha256"]));
}

#[test]
fn delta_from_the_base_manifest_alone_or_a_split_base_equals_delta_from_the_base_bundle() {
    let v = versions();
    // The vendor kept only v1's manifest (and its signature), taken out of the bundle.
    let files = BundleFiles::locate(&v.v1).unwrap();
    let dec = zstd::stream::read::Decoder::new(fs::File::open(&files.parts[0]).unwrap()).unwrap();
    let keep = v.demo.out.join("v1-manifest");
    fs::create_dir_all(&keep).unwrap();
    for e in tar::Archive::new(dec).entries().unwrap().take(2) {
        let mut e = e.unwrap();
        let name = e.path().unwrap().file_name().unwrap().to_owned();
        e.unpack(keep.join(name)).unwrap();
    }
    let manifest = keep.join("manifest.json");
    let from_manifest = v.demo.build(
        "v2-delta-from-manifest.airlock",
        &["--base".as_ref(), manifest.as_os_str(), "--base-pubkey".as_ref(), pubkey().as_os_str()],
    );
    assert_eq!(fs::read(&from_manifest).unwrap(), fs::read(&v.delta).unwrap(), "the same delta either way");

    // Split like any bundle, from a split base named by its base name: parts verify
    // and stage to the same tree.
    let v1_split = v.demo.out.join("v1-split");
    fs::create_dir_all(&v1_split).unwrap();
    for p in BundleFiles::locate(&v.v1).unwrap().parts {
        fs::copy(&p, v1_split.join("v1.airlock.part001")).unwrap();
    }
    let split = v.demo.build(
        "v2-delta-split.airlock",
        &["--base".as_ref(), v1_split.join("v1.airlock").as_os_str(), "--split-size".as_ref(), "1M".as_ref()],
    );
    let parts = BundleFiles::locate(&split).unwrap();
    assert!(parts.parts.len() >= 3, "a 2 MiB delta in 1M parts: {:?}", parts.parts);
    ok(Command::new(cargo_bin("airlock")).arg("verify").arg("--pubkey").arg(pubkey()).arg(&parts.parts[0]));
    let root = tempfile::tempdir().unwrap();
    let base = install_release(root.path(), &v.v1);
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    extract_delta(&parts, &keys(), &a, IMAGE_ARCHIVE_ENTRY, &base, &Silent).unwrap();
    extract_delta(&BundleFiles::locate(&v.delta).unwrap(), &keys(), &b, IMAGE_ARCHIVE_ENTRY, &base, &Silent).unwrap();
    assert_eq!(tree(&a), tree(&b));

    // --base-pubkey refuses a base signed by another key.
    let other = SecretKey::generate().unwrap();
    let other_pub = v.demo.out.join("other.pub");
    fs::write(&other_pub, other.public_key().to_text()).unwrap();
    let out = run(Command::new(cargo_bin("airlock-bundler"))
        .env("SOURCE_DATE_EPOCH", "1795305600")
        .arg("create")
        .arg(&v.demo.spec)
        .arg("-o")
        .arg(v.demo.out.join("refused.airlock"))
        .arg("--key")
        .arg(demo_dir().join("keys/demo.key"))
        .arg("--base")
        .arg(&v.v1)
        .arg("--base-pubkey")
        .arg(&other_pub));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--base"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn install_of_a_delta_is_refused_before_staging() {
    let v = versions();
    let root = tempfile::tempdir().unwrap();
    let out = run(Command::new(cargo_bin("airlock"))
        .arg("install")
        .arg(&v.delta)
        .arg("--pubkey")
        .arg(pubkey())
        .arg("--answers")
        .arg(demo_dir().join("answers.yaml"))
        .arg("--root")
        .arg(root.path())
        .arg("--yes"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is a delta bundle over airlock-demo 1.0.0"), "{stderr}");
    assert!(stderr.contains("airlock upgrade"), "{stderr}");
    assert!(!staging_current(root.path()).exists(), "install of a delta left staging behind");
}

#[test]
fn a_signed_delta_whose_base_entries_overlap_its_entries_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let readme = b"read me\n".to_vec();
    let entry = Entry {
        path: "files/app/README.txt".into(),
        size: readme.len() as u64,
        sha256: Sha256Digest::of(&readme),
        executable: false,
    };
    let m = Manifest {
        format: FORMAT_V1.into(),
        name: "airlock-demo".into(),
        version: "1.1.0".into(),
        created: airlock_format::manifest::rfc3339(1_795_305_600),
        distribution: None,
        installer: None,
        components: vec![],
        images: vec![],
        charts: vec![],
        files: vec![FileArtifact { name: "README.txt".into(), component: "app".into(), path: entry.path.clone() }],
        profiles: vec![],
        key_statements: vec![],
        entries: vec![entry.clone()],
        base: Some(BaseRef { name: "airlock-demo".into(), version: "1.0.0".into(), manifest_sha256: "ab".repeat(32) }),
        base_entries: vec![entry.clone()],
        upgrade: None,
        monitoring: None,
        drill_checks: Vec::new(),
    };
    assert!(m.validate().is_err(), "the manifest is invalid by construction");
    // Signed with the vendor's key all the same: the signature does not make it valid.
    let key = SecretKey::from_file(&demo_dir().join("keys/demo.key"), None).unwrap();
    let bytes = m.to_bytes();
    let sig = key.sign(&bytes, &m.trusted_comment(), "forged delta").unwrap();
    let out = d.path().join("overlap.airlock");
    let opts = WriteOptions { mtime: 0, level: 3, threads: 1, split_size: None };
    let planned = vec![PlannedEntry { entry, content: Content::Bytes(readme), precompressed: false }];
    write_bundle(&out, &bytes, sig.to_text().as_bytes(), &planned, &opts, &Silent).unwrap();

    let o = run(Command::new(cargo_bin("airlock")).arg("verify").arg("--pubkey").arg(pubkey()).arg(&out));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("`files/app/README.txt` is listed both as an entry and as a base entry"), "{stderr}");
}

#[test]
fn chart_digests_follow_the_charts_content_not_the_build_time() {
    let demo = Demo::new();
    // `airlock-bundler create` of the spec as it is now, at `epoch` (`None`: no
    // SOURCE_DATE_EPOCH, so the build time).
    let build = |name: &str, epoch: Option<&str>| {
        let out = demo.out.join(name);
        let mut cmd = Command::new(cargo_bin("airlock-bundler"));
        cmd.env_remove("SOURCE_DATE_EPOCH");
        if let Some(e) = epoch {
            cmd.env("SOURCE_DATE_EPOCH", e);
        }
        ok(cmd.arg("create").arg(&demo.spec).arg("-o").arg(&out).arg("--key").arg(demo_dir().join("keys/demo.key")));
        out
    };
    let charts = |bundle: &Path| -> BTreeMap<String, String> {
        let (m, _, _) =
            airlock_format::read::read_manifest(&BundleFiles::locate(bundle).unwrap(), Some(&keys())).unwrap();
        m.charts.iter().map(|c| (c.path.clone(), m.release_entry(&c.path).unwrap().sha256.hex())).collect()
    };
    let fixed = build("fixed.airlock", Some("1795305600"));
    let other = build("other.airlock", Some("1800000000"));
    let now = build("now.airlock", None);
    let (m_fixed, m_other) = (charts(&fixed), charts(&other));
    assert!(m_fixed.keys().any(|p| p.contains("airlock-app")), "the demo packages directory charts: {m_fixed:?}");
    assert_eq!(m_fixed, m_other, "chart digests changed with SOURCE_DATE_EPOCH");
    assert_eq!(m_fixed, charts(&now), "chart digests changed without SOURCE_DATE_EPOCH");

    // So a delta of a later build where only a file changed carries no chart again.
    let readme = demo.spec.parent().unwrap().join("files/README.txt");
    let mut text = fs::read_to_string(&readme).unwrap();
    text.push_str("one more line\n");
    fs::write(&readme, text).unwrap();
    demo.set_version("1.0.1");
    let out = demo.out.join("delta.airlock");
    ok(Command::new(cargo_bin("airlock-bundler"))
        .env_remove("SOURCE_DATE_EPOCH")
        .arg("create")
        .arg(&demo.spec)
        .arg("-o")
        .arg(&out)
        .arg("--key")
        .arg(demo_dir().join("keys/demo.key"))
        .arg("--base")
        .arg(&fixed));
    let (m, _, _) = airlock_format::read::read_manifest(&BundleFiles::locate(&out).unwrap(), Some(&keys())).unwrap();
    let carried: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).filter(|p| p.starts_with("charts/")).collect();
    assert!(carried.is_empty(), "the delta carries charts that did not change: {carried:?}");
    assert!(m.entries.iter().any(|e| e.path.ends_with("README.txt")), "the changed file is carried");
}
