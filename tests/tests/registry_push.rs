//! `airlock registry push` into a real `docker-registry` (htpasswd + TLS, and bearer
//! tokens), checked with `skopeo`. What is pinned:
//! - every image of the demo bundle, and a two-platform index, arrive under the
//!   documented mapping with the digests the signed bundle names (`skopeo inspect`);
//! - a second push of the same bundle sends no blob (the access log shows no upload);
//! - a push stopped in the middle of a blob continues from the chunks the registry
//!   holds, and one killed hard completes on the next run;
//! - a damaged bundle pushes no image, and never the damaged blob;
//! - the login from the environment or a docker config.json;
//! - wrong credentials and an untrusted CA fail naming the image and the registry,
//!   with a hint, and never show the password.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use airlock_format::parts::BundleFiles;
use airlock_format::read::read_manifest;
use airlock_tests::registry::{add_index, build_image, Registry, RegistryOptions};
use airlock_tests::{build_demo_bundle, cargo_bin, create_command, demo_dir, require_tool};

const USER: &str = "pusher";
const PASSWORD: &str = "s3cret-push-pw";

fn push_command(bundle: &Path, reg: &Registry, home: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(cargo_bin("airlock"));
    cmd.env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_STATE_HOME")
        .env("AIRLOCK_REGISTRY_USERNAME", USER)
        .env("AIRLOCK_REGISTRY_PASSWORD", PASSWORD)
        .args(["registry", "push"])
        .arg(bundle)
        .arg("--to")
        .arg(format!("{}/site", reg.host()))
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .args(extra)
        .stdin(Stdio::null());
    if let Some(ca) = reg.ca_file() {
        cmd.arg("--ca-file").arg(ca);
    }
    cmd
}

fn json_push(bundle: &Path, reg: &Registry, home: &Path, extra: &[&str]) -> serde_json::Value {
    let out = push_command(bundle, reg, home, &[&["--output", "json"], extra].concat()).output().unwrap();
    assert!(out.status.success(), "push failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the report is JSON")
}

#[test]
fn demo_bundle_arrives_with_the_signed_digests_and_a_second_push_sends_no_blob() {
    if require_tool("skopeo").is_none() {
        return;
    }
    let Some(reg) = Registry::start(RegistryOptions::site(USER, PASSWORD)) else { return };
    let t = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(t.path(), &[]);
    let m = read_manifest(&BundleFiles::locate(&bundle).unwrap(), None).unwrap().0;

    // A dry run sends nothing and says so.
    let dry = json_push(&bundle, &reg, t.path(), &["--dry-run"]);
    assert!(dry["images"].as_array().unwrap().iter().all(|i| i["state"] == "would-push"), "{dry}");
    assert!(dry["bytes_sent"].as_u64().unwrap() > 0);
    assert_eq!(reg.uploads(), 0, "a dry run uploaded");

    let first = json_push(&bundle, &reg, t.path(), &[]);
    assert!(first["images"].as_array().unwrap().iter().all(|i| i["state"] == "pushed"), "{first}");
    // Shared blobs go up once and are mounted elsewhere.
    let blobs = first["blobs"].as_array().unwrap();
    assert!(blobs.iter().any(|b| b["action"] == "mounted"), "no blob was mounted: {first}");
    // docker.io/airlock-demo/api:1.0.0 -> HOST/site/docker.io/airlock-demo/api:1.0.0
    reg.assert_pushed("site", &m.images);
    let before = reg.uploads();
    assert!(before > 0);

    let started = Instant::now();
    let second = json_push(&bundle, &reg, t.path(), &[]);
    assert!(second["images"].as_array().unwrap().iter().all(|i| i["state"] == "present"), "{second}");
    assert_eq!(second["bytes_sent"], 0);
    assert_eq!(reg.uploads(), before, "the second push uploaded something");
    eprintln!("second push: {:?}", started.elapsed());
}

/// A bundle of images built with umoci from an OCI layout: `images` are (reference
/// in the bundle, tag in the layout).
fn layout_bundle(dir: &Path, layout: &Path, images: &[(&str, &str)]) -> PathBuf {
    let mut y = "name: pushed\nversion: '1.0'\ncomponents:\n  - name: app\n    images:\n".to_string();
    for (r, tag) in images {
        y.push_str(&format!("      - ref: {r}\n        from: oci:{}:{tag}\n", layout.display()));
    }
    let spec = dir.join("bundle.yaml");
    std::fs::write(&spec, y).unwrap();
    let out = dir.join("out.airlock");
    let o = create_command(&spec, &out, &demo_dir().join("keys/demo.key"))
        .env("HOME", dir)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .output()
        .unwrap();
    assert!(o.status.success(), "bundle: {}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn two_platform_index_is_pushed_whole_through_a_bearer_token_registry() {
    if require_tool("skopeo").is_none() || require_tool("umoci").is_none() {
        return;
    }
    let opts = RegistryOptions { login: Some((USER.into(), PASSWORD.into())), token: true, ..Default::default() };
    let Some(reg) = Registry::start(opts) else { return };
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    build_image(t.path(), &layout, "amd", "amd64", &[("data.bin", 200_000)]).unwrap();
    build_image(t.path(), &layout, "arm", "arm64", &[("data.bin", 150_000)]).unwrap();
    add_index(&layout, &[("amd", "amd64"), ("arm", "arm64")], "multi").unwrap();
    let bundle = layout_bundle(t.path(), &layout, &[("example.com/team/multi:2", "multi")]);
    let m = read_manifest(&BundleFiles::locate(&bundle).unwrap(), None).unwrap().0;
    assert_eq!(m.images[0].media_type, "application/vnd.oci.image.index.v1+json");

    // The login from a docker config.json this time.
    let auth = t.path().join("auth.json");
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:{PASSWORD}"));
    std::fs::write(&auth, format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.host())).unwrap();
    let out = push_command(&bundle, &reg, t.path(), &["--plain-http", "--auth-file", auth.to_str().unwrap()])
        .env_remove("AIRLOCK_REGISTRY_USERNAME")
        .env_remove("AIRLOCK_REGISTRY_PASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success(), "push failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(reg.skopeo_digest("site/example.com/team/multi:2").unwrap(), m.images[0].digest.to_string());
    // Each platform's manifest is there by digest too: the index was not flattened.
    let raw = airlock_tests::registry::run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("--creds={USER}:{PASSWORD}"),
            &format!("docker://{}/site/example.com/team/multi:2", reg.host()),
        ],
    )
    .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    for child in index["manifests"].as_array().unwrap() {
        let d = child["digest"].as_str().unwrap();
        assert_eq!(reg.skopeo_digest(&format!("site/example.com/team/multi@{d}")).unwrap(), d);
    }
}

/// A registry with a bundle of one image with a 6 MiB layer, and a push of it started
/// at 2 MiB/s in 1 MiB chunks, caught in the middle of the layer.
struct Interrupted {
    reg: Registry,
    t: tempfile::TempDir,
    bundle: PathBuf,
    push: Option<std::process::Child>,
}

fn push_caught_mid_blob() -> Option<Interrupted> {
    if require_tool("skopeo").is_none() || require_tool("umoci").is_none() {
        return None;
    }
    let reg = Registry::start(RegistryOptions { login: Some((USER.into(), PASSWORD.into())), ..Default::default() })?;
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    // Random bytes do not compress: the layer is as big as the file.
    build_image(t.path(), &layout, "big", "amd64", &[("data.bin", 6 << 20)]).unwrap();
    let bundle = layout_bundle(t.path(), &layout, &[("example.com/team/big:1", "big")]);
    let state = t.path().join(".local/state/airlock/push");
    let push = push_command(&bundle, &reg, t.path(), &["--plain-http", "--chunk-size", "1M", "--limit-rate", "2M"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(&state).map(|d| d.count() > 0).unwrap_or(false) {
        assert!(Instant::now() < deadline, "no upload started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A few chunks went up, the layer is not done.
    std::thread::sleep(Duration::from_millis(1600));
    Some(Interrupted { reg, t, bundle, push: Some(push) })
}

impl Interrupted {
    fn push_again(&self) -> serde_json::Value {
        let report = json_push(&self.bundle, &self.reg, self.t.path(), &["--plain-http", "--chunk-size", "1M"]);
        let m = read_manifest(&BundleFiles::locate(&self.bundle).unwrap(), None).unwrap().0;
        assert_eq!(self.reg.skopeo_digest("site/example.com/team/big:1").unwrap(), m.images[0].digest.to_string());
        let state = self.t.path().join(".local/state/airlock/push");
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0, "a finished upload's session file was kept");
        report
    }
}

fn layer(report: &serde_json::Value) -> &serde_json::Value {
    report["blobs"].as_array().unwrap().iter().max_by_key(|b| b["size"].as_u64().unwrap()).unwrap()
}

#[test]
fn a_push_stopped_by_sigterm_mid_blob_continues_from_the_chunks_the_registry_holds() {
    let Some(mut run) = push_caught_mid_blob() else { return };
    let push = run.push.take().unwrap();
    airlock_tests::registry::run("kill", &["-TERM", &push.id().to_string()]).unwrap();
    let out = push.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stopped after") && err.contains("example.com/team/big:1") && err.contains("hint:"), "{err}");

    let report = run.push_again();
    let layer = layer(&report);
    let resumed = layer["resumed_from"].as_u64().unwrap_or(0);
    assert!(resumed >= 1 << 20, "the upload started over: {report}");
    // Every blob uploaded by this run went up whole but for what the registry held.
    let due: u64 = report["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["action"] == "uploaded")
        .map(|b| b["size"].as_u64().unwrap() - b["resumed_from"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(report["bytes_sent"].as_u64().unwrap(), due, "{report}");
}

#[test]
fn a_push_killed_hard_mid_blob_completes_on_the_next_run() {
    // distribution (and Harbor, built on it) drops an upload that holds part of a
    // chunk; the next run notices, starts that blob over and completes the push.
    let Some(mut run) = push_caught_mid_blob() else { return };
    let mut push = run.push.take().unwrap();
    push.kill().unwrap();
    let _ = push.wait();
    let report = run.push_again();
    assert_eq!(layer(&report)["action"], "uploaded", "{report}");
}

#[test]
fn a_bundle_with_a_damaged_layer_pushes_no_image_and_never_that_layer() {
    let Some(reg) =
        Registry::start(RegistryOptions { login: Some((USER.into(), PASSWORD.into())), ..Default::default() })
    else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(t.path(), &[]);
    let m = read_manifest(&BundleFiles::locate(&bundle).unwrap(), None).unwrap().0;
    // The largest blob of the first image: a layer.
    let image = &m.images[0];
    let blob =
        image.blobs.iter().max_by_key(|d| m.entry(&airlock_format::manifest::blob_path(d)).unwrap().size).unwrap();
    let path = airlock_format::manifest::blob_path(blob);
    let tampered = with_a_byte_flipped(&bundle, &path, 10, t.path());

    let out = push_command(&tampered, &reg, t.path(), &["--plain-http"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let err = failure(&out);
    assert!(err.contains(&path) && err.contains(&image.reference), "{err}");
    assert!(!reg.blob_data(&blob.to_string()).exists(), "the damaged blob reached the registry");
    for i in &m.images {
        assert!(reg.skopeo_digest(&format!("site/{}", i.reference)).is_err(), "{} was pushed", i.reference);
    }
}

/// A copy of `bundle` with byte `at` of entry `path` flipped, re-packed (a byte flip in
/// the compressed file would usually break decoding instead of reaching the entry).
fn with_a_byte_flipped(bundle: &Path, path: &str, at: usize, dir: &Path) -> PathBuf {
    let mut raw = zstd::decode_all(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut offset = None;
    for e in tar::Archive::new(&raw[..]).entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some(path) {
            offset = Some(e.raw_file_position() as usize + at);
        }
    }
    raw[offset.expect("blob entry")] ^= 1;
    let tampered = dir.join("tampered.airlock");
    std::fs::write(&tampered, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    tampered
}

#[test]
fn a_large_layer_whose_bytes_do_not_match_its_digest_never_becomes_a_blob_in_the_registry() {
    // A layer this large goes to the upload workers while the bundle is still being
    // read (unlike the demo's small ones): it must be held back until its own digest
    // matched, and neither a blob nor an upload holding its bytes may remain.
    if require_tool("skopeo").is_none() || require_tool("umoci").is_none() {
        return;
    }
    let Some(reg) = Registry::start(RegistryOptions::default()) else { return };
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    build_image(t.path(), &layout, "big", "amd64", &[("data.bin", 6 << 20)]).unwrap();
    let bundle = layout_bundle(t.path(), &layout, &[("example.com/team/big:1", "big")]);
    let m = read_manifest(&BundleFiles::locate(&bundle).unwrap(), None).unwrap().0;
    let image = &m.images[0];
    let blob =
        image.blobs.iter().max_by_key(|d| m.entry(&airlock_format::manifest::blob_path(d)).unwrap().size).unwrap();
    let path = airlock_format::manifest::blob_path(blob);
    // Near the end: most of the layer has streamed out of the bundle when it shows.
    let size = m.entry(&path).unwrap().size as usize;
    let tampered = with_a_byte_flipped(&bundle, &path, size - 100, t.path());

    let out = push_command(&tampered, &reg, t.path(), &["--plain-http", "--chunk-size", "1M"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let err = failure(&out);
    assert!(err.contains(&path) && err.contains(&image.reference), "{err}");
    assert!(!reg.blob_data(&blob.to_string()).exists(), "the damaged layer became a blob in the registry");
    assert!(reg.skopeo_digest(&format!("site/{}", image.reference)).is_err(), "the image was pushed");
    // No upload holds its bytes either (a dropped one keeps only an empty hash state).
    let uploads = reg
        .blob_data(&blob.to_string())
        .ancestors()
        .nth(5)
        .unwrap()
        .join("repositories/site/example.com/team/big/_uploads");
    // (No `_uploads` at all when no upload was ever opened there.)
    let held = if uploads.exists() {
        airlock_tests::registry::run("find", &[uploads.to_str().unwrap(), "-name", "data"]).unwrap()
    } else {
        vec![]
    };
    assert!(held.is_empty(), "an upload of the damaged layer is kept: {}", String::from_utf8_lossy(&held));
    let state = t.path().join(".local/state/airlock/push");
    assert_eq!(std::fs::read_dir(&state).map(|d| d.count()).unwrap_or(0), 0, "its upload session was kept");

    // The intact bundle then pushes: nothing of the dropped upload is in the way.
    let report = json_push(&bundle, &reg, t.path(), &["--plain-http"]);
    assert_eq!(reg.skopeo_digest(&format!("site/{}", image.reference)).unwrap(), image.digest.to_string(), "{report}");
}

fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "the push succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("hint:"), "no hint: {err}");
    assert!(!err.contains(PASSWORD) && !String::from_utf8_lossy(&out.stdout).contains(PASSWORD), "password shown");
    err
}

#[test]
fn wrong_credentials_and_an_untrusted_ca_fail_naming_the_image_and_the_registry() {
    let opts = RegistryOptions { login: Some((USER.into(), PASSWORD.into())), tls: true, ..Default::default() };
    let Some(reg) = Registry::start(opts) else { return };
    let t = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(t.path(), &[]);

    let out = push_command(&bundle, &reg, t.path(), &[]).env("AIRLOCK_REGISTRY_PASSWORD", "wrong").output().unwrap();
    let err = failure(&out);
    assert!(err.contains("refused the credentials") && err.contains(&reg.host()), "{err}");
    assert!(err.contains("docker.io/airlock-demo/"), "the image is not named: {err}");

    let mut cmd = push_command(&bundle, &reg, t.path(), &[]);
    // The same command without --ca-file: the system's CAs do not sign the test CA.
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let ca_at = args.iter().position(|a| a == "--ca-file").unwrap();
    let mut plain = Command::new(cmd.get_program());
    plain.envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))));
    plain.args(&args[..ca_at]).stdin(Stdio::null());
    let err = failure(&plain.output().unwrap());
    assert!(err.contains(&reg.host()) && err.contains("--ca-file"), "{err}");
    assert!(err.contains("docker.io/airlock-demo/"), "the image is not named: {err}");
    let _ = &mut cmd;
}
